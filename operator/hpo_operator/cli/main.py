"""The ``hpo`` command."""

from __future__ import annotations

import argparse
import sys

from hpo_operator.cli import crds, run, simulate, status
from hpo_operator.spec.errors import ManifestError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo", description="Hyperparameter optimization with ASHA, on Kubernetes "
                                     "(the operator), on this machine (hpo run) or on learning-curve tables (hpo simulate).")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (run, status, simulate, crds):
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
