#!/usr/bin/env bash
# The whole test suite: unit, simulation, local-run and integration tiers
# (the integration tier builds Kubernetes 1.20.2 from Debian's source package
# on first use and caches it under ~/.cache/hpo-operator; see docs/testing.md).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not integration".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
set +e
.venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
