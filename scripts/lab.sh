#!/usr/bin/env bash
# Set up (.venv, CPU PyTorch, nbseg) and open JupyterLab on the quickstart notebook.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/jupyter lab notebooks/01_quickstart.ipynb "$@"
