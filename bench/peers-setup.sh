#!/usr/bin/env bash
# Creates bench/.venv-peers for bench/peers.py: Syne Tune 0.13 (the last release
# with HyperbandScheduler's promotion type and its BOHB, MOBSTER and HyperTune
# searchers) needs numpy/pandas/pyarrow pins the project's .venv does not take,
# so the peers get their own environment. The project goes in without its
# dependencies (the simulator needs numpy, scipy, pydantic, sortedcontainers);
# scikit-learn because Syne Tune's blackbox_repository imports it.
# Idempotent. Usage: bench/peers-setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=bench/.venv-peers
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
"$VENV/bin/pip" install -q "syne-tune[gpsearchers,kde]==0.13.0" numpy==1.26.4 pyarrow==18.1.0 pandas==2.2.3 \
  "optuna>=3.6" "scipy>=1.11" "scikit-learn>=1.4,<1.6" "pydantic>=2.6,<3" "sortedcontainers>=2.4" PyYAML
"$VENV/bin/pip" install -q --no-deps -e .
