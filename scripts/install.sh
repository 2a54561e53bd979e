#!/usr/bin/env bash
# Install kdclaims and everything it needs on a fresh Debian/Ubuntu machine, then run the main job:
# one real claim (Table 1: distillation raises student accuracy) verified end to end on Fashion-MNIST.
#   KDCLAIMS_SKIP_RUN=1 ./scripts/install.sh     install only
#   PYTHON=/usr/bin/python3 ./scripts/install.sh  build the virtual environment from that interpreter
# Everything goes into a virtual environment, .venv/ (or $KDCLAIMS_VENV): a distribution's python3 refuses
# `pip install` outside one (PEP 668, "externally-managed-environment").
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
apt_install() {
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# Fashion-MNIST (IDX files in /usr/share/datasets/fashion-mnist) for the cpu tier and the main job.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "== installing Debian package dataset-fashion-mnist"
  apt_install dataset-fashion-mnist
fi

BASE=${PYTHON:-python3}
VENV=${KDCLAIMS_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$BASE" -c "import ensurepip, venv" 2>/dev/null; then
    echo "== installing Debian package python3-venv (needed to create $VENV)"
    apt_install python3-venv
  fi
  echo "== creating virtual environment $VENV from $($BASE --version)"
  "$BASE" -m venv "$VENV"
fi
PY="$VENV/bin/python"
echo "== installing torch 2.14.1 / torchvision 0.29.1 and kdclaims into $VENV ($($PY --version))"
$PY -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
$PY -m pip install -q --disable-pip-version-check -e .

if [ "${KDCLAIMS_SKIP_RUN:-0}" != 1 ]; then
  echo "== main job: kdclaims run accuracy-gain --tier cpu (Fashion-MNIST)"
  $PY -m kdclaims.cli run --quiet
fi
