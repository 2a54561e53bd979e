#!/usr/bin/env bash
# Install kdclaims and everything it needs on a fresh Debian machine, then run the main job:
# one real claim (Table 1: distillation raises student accuracy) verified end to end on Fashion-MNIST.
#   KDCLAIMS_SKIP_RUN=1 ./scripts/install.sh     install only
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# Fashion-MNIST (IDX files in /usr/share/datasets/fashion-mnist) for the cpu tier and the main job.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "== installing Debian package dataset-fashion-mnist"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PY=${PYTHON:-python3}
echo "== installing torch 2.14.1 / torchvision 0.29.1 and kdclaims ($($PY --version))"
$PY -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
$PY -m pip install -q --disable-pip-version-check -e .

if [ "${KDCLAIMS_SKIP_RUN:-0}" != 1 ]; then
  echo "== main job: kdclaims run accuracy-gain --tier cpu (Fashion-MNIST)"
  $PY -m kdclaims.cli run --quiet
fi
