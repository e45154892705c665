"""The ``hpo`` command."""

from __future__ import annotations

import argparse
import sys

from hpo_operator.cli import crds, plot, report, run, simulate, status
from hpo_operator.spec.errors import ManifestError


def build_parser(prog: str = "hpo") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Hyperparameter optimization with ASHA, on Kubernetes "
                                     "(the operator), on this machine (hpo run) or on learning-curve tables (hpo simulate).")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (run, status, plot, report, simulate, crds):
        module.add_parser(sub)
    return parser


def main(argv=None, *, as_kubectl_plugin: bool = False) -> int:
    args = build_parser("kubectl hpo" if as_kubectl_plugin else "hpo").parse_args(argv)
    args.kubectl_plugin = as_kubectl_plugin  # there, an experiment's bare NAME is on the cluster
    try:
        return args.func(args) or 0
    except ManifestError as err:
        print("error: invalid HPOExperiment:", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def kubectl_plugin(argv=None) -> int:
    """``kubectl hpo ...``: kubectl runs the ``kubectl-hpo`` program on PATH with the words after ``hpo``."""
    return main(argv, as_kubectl_plugin=True)


if __name__ == "__main__":
    sys.exit(main())
