#!/usr/bin/env bash
# Populations on a GPU: lenet and the 99%-MNIST recipe (mnist-fast), one run against a population of
# 32 members, runs per hour measured in one process (benchmarks/population.py). From the repository
# root, on a machine with a CUDA GPU:
#
#   bash benchmarks/gpu.sh DATASETS_DIR            # DATASETS_DIR holds mnist/ (IDX files)
#   DEVICE=cpu MEMBERS=2 bash benchmarks/gpu.sh DATASETS_DIR   # the same steps on the CPU (a dry run)
#
# Steps: the GPU is visible; 4 lenet members match their single runs on the device (fp32, no TF32);
# then each case: SINGLE_RUNS (default 2) runs timed one at a time (scaled to MEMBERS runs) and one
# population of MEMBERS (default 32), EPOCHS (default 1) epochs each. Rows go to
# benchmarks/results/gpu-population.json. Never downloads. Exit status 0 when every step passed.
set -u
D=${1:-}
if [ -z "$D" ] || [ ! -d "$D/mnist" ]; then
  echo "usage: bash benchmarks/gpu.sh DATASETS_DIR   (a folder holding mnist/)" >&2
  exit 2
fi
D=$(cd "$D" && pwd)
cd "$(dirname "$0")/.." || exit 2
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEVICE=${DEVICE:-cuda} MEMBERS=${MEMBERS:-32} SINGLE_RUNS=${SINGLE_RUNS:-2} EPOCHS=${EPOCHS:-1}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TINYVISION_OFFLINE=1
OUT=benchmarks/results/gpu-population.json
FAILS=0
step() {  # step NAME COMMAND...: PASS / FAIL with the seconds it took
  local name=$1 t0=$SECONDS; shift
  if timeout "${STEP_TIMEOUT:-900}" "$@"; then echo "PASS $name ($((SECONDS - t0)) s)"
  else echo "FAIL $name (rc $?, $((SECONDS - t0)) s)"; FAILS=$((FAILS + 1)); fi
}
if [ "$DEVICE" != cpu ]; then
  step gpu-visible "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(), torch.__version__)"
fi
step members-match-single-runs "$PYTHON" -m benchmarks.population --check --device "$DEVICE" --data-dir "$D"
step populations "$PYTHON" -m benchmarks.population --device "$DEVICE" --cases lenet-seeds,mnist-fast-seeds \
  --members "$MEMBERS" --single-runs "$SINGLE_RUNS" --epochs "$EPOCHS" --data-dir "$D" --json "$OUT"
echo "$FAILS step(s) failed; rows in $OUT"
exit $((FAILS > 0))
