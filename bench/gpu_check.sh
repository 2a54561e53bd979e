#!/usr/bin/env bash
# The CUDA check, run on a lent GPU machine from the repository root (no network there):
#   wheels for grad-cam, ttach and pydantic in .whl/ (see bench/README.md), then
#   OUT=/some/dir bash bench/gpu_check.sh
# 1. the gpu tier's code paths on the stand-in ImageFolder of fixtures/ (bf16 autocast, channels_last,
#    DataLoader workers, ResNet-50 -> ResNet-18 with KL/Hint/CRD, every probe on CUDA), cold then warm;
# 2. the benchmark's CUDA rows; 3. the layout tests on CUDA. Everything it prints goes to $OUT/gpu_check.log.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
PYT="python3 -m pytest -p kdclaims.plugin -p no:cacheprovider -q"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'device', torch.cuda.get_device_name(0))"
  echo "== 1a. gpu tier on the stand-in data, cold (trains 1 teacher + 8 students)"
  /usr/bin/time -f "wall %e s" timeout 240 $PYT bench/gpu/claims -m gpu --kd-data fixtures/data --kd-cache /tmp/kdc \
      --kd-report /tmp/rep/cold --kd-allow-inconclusive -rA
  echo "== 1b. the same again, warm (every model and probe from the store)"
  /usr/bin/time -f "wall %e s" timeout 120 $PYT bench/gpu/claims -m gpu --kd-data fixtures/data --kd-cache /tmp/kdc \
      --kd-report /tmp/rep/warm --kd-allow-inconclusive
  echo "== 2. benchmark CUDA rows"
  timeout 150 python3 bench/run.py --only cuda --out "$OUT/bench_cuda.json"
  echo "== 3. layout tests on CUDA"
  KDCLAIMS_LAYOUT_DEVICE=cuda timeout 90 $PYT tests/test_gpu_layouts.py -x
} 2>&1 | tee "$OUT/gpu_check.log"
tar czf "$OUT/reports.tgz" -C /tmp/rep . 2>/dev/null || true
