#!/usr/bin/env bash
# The main job: set up, then run the example experiment end to end on this
# machine (ASHA over an MLP on scikit-learn's digits; trials are local
# processes that really pause and resume through checkpoints). No cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --no-test
exec .venv/bin/hpo run examples/digits-asha.yaml --fresh "$@"
