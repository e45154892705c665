"""``python -m hpo_operator.controller``: run the operator (watches HPO_NAMESPACE, or every namespace)."""

import os
import sys

import kopf.cli  # noqa: F401  (kopf's click entry point)
from kopf.cli import main

if __name__ == "__main__":
    namespace = os.environ.get("HPO_NAMESPACE")
    scope = [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
    sys.argv = ["kopf", "run", "--standalone", *scope, "-m", "hpo_operator.controller.handlers", *sys.argv[1:]]
    sys.exit(main())
