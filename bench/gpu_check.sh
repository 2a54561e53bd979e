#!/usr/bin/env bash
# The CUDA check, run on a lent GPU machine from the repository root (no network there):
#   wheels for grad-cam, ttach, pydantic and scikit-learn (only its two sample photos are read: --no-deps is
#   enough) in .whl/ (see bench/gpu/README.md), then
#   OUT=/some/dir bash bench/gpu_check.sh [STEP ...]      # steps 1 2 3 4 5, all by default
# 1. the gpu tier's code paths on the stand-in ImageFolder of fixtures/ (pipeline: tensor - nvjpeg decoding and
#    crops on the card, DataLoader workers from a fork server; bf16 autocast, channels_last, ResNet-50 -> ResNet-18 with
#    KL/Hint/CRD, every probe on CUDA), cold then warm;
# 2. the benchmark's cuda and input rows (ResNet-18 on resident tensors; on a 3,000-JPEG tree through each input
#    pipeline; TFLOPS against the card's peak);
# 3. the layout tests on CUDA; 4. the input-pipeline tests on CUDA (nvjpeg against PIL, within tolerance);
# 5. a count of the DataLoader's fork() warnings in everything above (0 expected: no worker is forked from a CUDA process).
# Everything it prints is appended to $OUT/gpu_check.log (the bench's rows also go to $OUT/bench_cuda.json), so
# two calls (e.g. `... gpu_check.sh 1` then `... gpu_check.sh 2 3 4 5`, each under a 10-minute limit) make one
# log and step 5 counts over both. Worst case of all steps, by their timeouts: about 12 minutes; the previous
# check's steps 1-3 took under 3.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
STEPS=${*:-1 2 3 4 5}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
PYT=(python3 -m pytest -p kdclaims.plugin -p no:cacheprovider -q -W "default:This process:DeprecationWarning")
has() { [[ " $STEPS " == *" $1 "* ]]; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'device', torch.cuda.get_device_name(0))"
  echo "steps: $STEPS ($(date -u +%FT%TZ))"
  if has 1; then
    echo "== 1a. gpu tier on the stand-in data, pipeline: tensor, cold (trains 1 teacher + 8 students)"
    /usr/bin/time -f "wall %e s" timeout 200 "${PYT[@]}" bench/gpu/claims -m gpu --kd-data fixtures/data --kd-cache /tmp/kdc \
        --kd-report /tmp/rep/cold --kd-allow-inconclusive -rA
    echo "== 1b. the same again, warm (every model and probe from the store)"
    /usr/bin/time -f "wall %e s" timeout 90 "${PYT[@]}" bench/gpu/claims -m gpu --kd-data fixtures/data --kd-cache /tmp/kdc \
        --kd-report /tmp/rep/warm --kd-allow-inconclusive
  fi
  if has 2; then
    echo "== 2. benchmark cuda and input rows"
    python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('sklearn') is None)" \
        || echo "no scikit-learn in .whl/: the input rows cannot make their JPEG tree"
    timeout 240 python3 -W "default:This process:DeprecationWarning" bench/run.py --only cuda input \
        --out "$OUT/bench_cuda.json"
  fi
  if has 3; then
    echo "== 3. layout tests on CUDA"
    KDCLAIMS_LAYOUT_DEVICE=cuda timeout 60 "${PYT[@]}" tests/test_gpu_layouts.py -x
  fi
  if has 4; then
    echo "== 4. input-pipeline tests on CUDA (tensor pipeline decoding with nvjpeg, against PIL)"
    KDCLAIMS_INPUT_DEVICE=cuda timeout 120 "${PYT[@]}" tests/test_gpu_input.py -rA
  fi
} 2>&1 | tee -a "$OUT/gpu_check.log"
if has 5; then
  echo "== 5. DataLoader fork() warnings above: $(grep -c 'use of fork() may lead to deadlocks' "$OUT/gpu_check.log")" \
      | tee -a "$OUT/gpu_check.log"
fi
tar czf "$OUT/reports.tgz" -C /tmp/rep . 2>/dev/null || true
