"""``python -m hpo_operator.controller [kopf arguments]``: run the operator (the image's entry point).

Without arguments it runs ``kopf run --standalone`` on the handlers, watching HPO_NAMESPACE or every
namespace; arguments starting with kopf's ``run`` are passed to kopf as they are, any others are added to
the default.

kopf ends the whole operator when a watch is answered "404 Not Found". A restarting API server answers
so for custom resources until it has loaded their definitions (it listens first), so every API server
restart could stop the operator. The operator then starts afresh in the same process (``exec``, the
same arguments): what Kubernetes would do with the pod, at once and without its crash-loop back-off. It
loses nothing (each experiment's owner rebuilds its state from the records), and the startup handler
waits until the resources are served again.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from kopf.cli import main as kopf_main  # kopf's click entry point

HANDLERS = "hpo_operator.controller.handlers"
PATTERN_CHARACTERS = "*?!,"  # kopf's namespace patterns (globs, negations, lists)
RESTART_DELAY_SECONDS = 1.0  # a 404 that does not go away restarts once a second, not in a tight loop

logger = logging.getLogger("hpo_operator.controller")


def kopf_arguments(argv: list[str]) -> list[str]:
    if argv[:1] == ["run"]:
        return list(argv)
    namespace = os.environ.get("HPO_NAMESPACE")
    scope = [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
    return ["run", "--standalone", *scope, "-m", HANDLERS, *argv]


def namespace_patterns(arguments: list[str]) -> list[str]:
    """The values of ``--namespace``/``-n`` that are kopf patterns rather than names.

    kopf serves a pattern only by listing and watching namespaces (its "scanning"), which the operator
    keeps off (handlers.configure); without it kopf drops a pattern without a word and serves nothing."""
    values = []
    for i, arg in enumerate(arguments):
        if arg in ("--namespace", "-n") and i + 1 < len(arguments):
            values.append(arguments[i + 1])
        elif arg.startswith("--namespace="):
            values.append(arg.split("=", 1)[1])
        elif arg.startswith("-n") and len(arg) > 2:
            values.append(arg[2:].lstrip("="))
    return [v for v in values if any(c in v for c in PATTERN_CHARACTERS)]


def resources_unserved(err: BaseException) -> bool:
    """kopf's APINotFoundError (not exported by kopf): an API answer with status 404."""
    return getattr(err, "status", None) == 404


def main(argv: list[str]) -> int:
    arguments = kopf_arguments(argv)
    patterns = namespace_patterns(arguments)
    if patterns:
        where = "HPO_NAMESPACE" if argv[:1] != ["run"] and os.environ.get("HPO_NAMESPACE") in patterns \
            else "--namespace"
        print(f"{where}={patterns[0]}: the operator serves namespaces by name, not by pattern; name each "
              f"one (--namespace team-a --namespace team-b) or pass --all-namespaces", file=sys.stderr)
        return 2
    try:
        kopf_main(args=arguments, prog_name="kopf")
    except Exception as err:
        if not resources_unserved(err):
            raise
        logger.warning(f"The API server stopped serving a watched resource ({err}): starting the operator afresh")
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(RESTART_DELAY_SECONDS)
        os.execv(sys.executable, [sys.executable, "-m", "hpo_operator.controller", *arguments])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
