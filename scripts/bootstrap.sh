#!/usr/bin/env bash
# Creates .venv with the project and its test dependencies. Idempotent: a
# second run only installs what changed. Usage: scripts/bootstrap.sh [--no-test]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# torch: the CPU build is enough for the examples and tests; on a GPU machine
# install the CUDA build of your choice before running this script.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "${HPO_TORCH_SPEC:-torch==2.13.0}"
fi
# examples: what the example trainers import (the demo runs one); plot: hpo plot and hpo report; test: the suite.
extras="torch,examples,plot"
[ "${1:-}" = "--no-test" ] || extras="torch,examples,plot,test"
.venv/bin/pip install -q -e ".[${extras}]"
