#!/usr/bin/env bash
# Set up everything (venv, packages, Chromium), lint, type-check, and run the whole test suite
# (unit, end-to-end, notebooks, real-browser tests). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
export NBSEG_SMALL=1            # notebooks run in their small (CI) size
export NBSEG_BROWSER=${NBSEG_BROWSER:-/usr/bin/chromium}
.venv/bin/ruff check nbseg tests benchmarks notebooks scripts
.venv/bin/ruff format --check nbseg tests benchmarks notebooks scripts
.venv/bin/mypy                  # type check: the files and settings of [tool.mypy] in pyproject.toml
.venv/bin/python -m pytest "$@"
