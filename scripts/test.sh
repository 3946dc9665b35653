#!/usr/bin/env bash
# The test command (README's second command; CI runs it through .ci/run):
# set up, lint, then the default test suite (everything not marked slow), screenshots in test-artifacts/.
# Usage: bash scripts/test.sh [extra pytest args]      e.g. bash scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
.venv/bin/ruff check proda_engine dashboard tests benchmarks scripts
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -m "not slow"
