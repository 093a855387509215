#!/usr/bin/env bash
# Create .venv with CPU PyTorch and nbseg (editable, with dev extras). Idempotent.
# Usage: bash scripts/setup.sh [--browser]   (--browser also installs Debian's chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${NBSEG_VENV:-.venv}
STAMP="$VENV/.nbseg-setup"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
# Reinstall only when pyproject.toml changed since the last successful setup.
if [ ! -f "$STAMP" ] || ! cmp -s pyproject.toml "$STAMP"; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "[setup] installing CPU PyTorch"
    "$VENV/bin/python" -m pip install -q "torch==${NBSEG_TORCH_VERSION:-2.13.0}" \
      || "$VENV/bin/python" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
  echo "[setup] installing nbseg[dev]"
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  "$VENV/bin/python" -m nbseg._lab_settings >/dev/null   # save widget state with notebooks
  cp pyproject.toml "$STAMP"
fi
if [ "${1:-}" = "--browser" ]; then
  if ! command -v chromium >/dev/null 2>&1; then
    echo "[setup] installing Debian chromium"
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi
