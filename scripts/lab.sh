#!/usr/bin/env bash
# Set up (.venv, CPU PyTorch, nbseg) and open JupyterLab on the quickstart notebook.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
EXTRA=()
[ "$(id -u)" = 0 ] && EXTRA+=(--allow-root)   # containers often run as root
exec .venv/bin/jupyter lab "${EXTRA[@]}" notebooks/01_quickstart.ipynb "$@"
