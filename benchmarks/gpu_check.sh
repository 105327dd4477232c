#!/usr/bin/env bash
# Every device path of tinyvision in one go, PASS / FAIL / SKIP per step; about 6 minutes on one
# H100/H200 (each step is capped at 5 minutes, the benchmark at 8). From the repository root:
#
#   bash benchmarks/gpu_check.sh DATASETS_DIR              # DATASETS_DIR holds mnist/ (IDX files)
#   bash benchmarks/gpu_check.sh --cpu-only DATASETS_DIR   # no GPU: the same steps on the CPU,
#                                                          # the CUDA-only ones SKIP
#
# Never downloads (TINYVISION_OFFLINE=1; Digits ships with scikit-learn). PYTHON picks the
# interpreter (default .venv/bin/python, else python3); KEEP=1 keeps the scratch folder even when
# every step passed. Exit status 0 when no step failed. Steps run on after a failure; each one's
# output is in its log, named in the FAIL line.
set -u
CPU_ONLY=0
if [ "${1:-}" = "--cpu-only" ]; then CPU_ONLY=1; shift; fi
D=${1:-}
if [ -z "$D" ] || [ ! -d "$D/mnist" ]; then
  echo "usage: bash benchmarks/gpu_check.sh [--cpu-only] DATASETS_DIR   (a folder holding mnist/)" >&2
  exit 2
fi
D=$(cd "$D" && pwd)
cd "$(dirname "$0")/.." || exit 2
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PY=$PYTHON
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TINYVISION_OFFLINE=1 MPLBACKEND=Agg TINYVISION_DIST_TIMEOUT=60
T=$(mktemp -d "${TMPDIR:-/tmp}/tinyvision-gpu-check.XXXXXX")
export TINYVISION_DATA=$T/data-cache  # nothing outside the scratch folder is written
TV="$PY -m tinyvision.cli"
FAILS=0 PASSES=0 SKIPS=0 START=$SECONDS
if [ $CPU_ONLY = 1 ]; then DEV=cpu; else DEV=cuda; fi

# step NAME COMMAND...: PASS/FAIL with the seconds taken and the log's last line
step() {
  local name=$1 t0=$SECONDS rc; shift
  if [ "$*" = "" ]; then echo "FAIL $name (no command)"; FAILS=$((FAILS + 1)); return; fi
  timeout "${STEP_TIMEOUT:-300}" "$@" >"$T/$name.log" 2>&1; rc=$?
  local last; last=$(grep -v '^\s*$' "$T/$name.log" | tail -n 1 | cut -c1-160)
  if [ $rc = 0 ]; then
    echo "PASS $name ($((SECONDS - t0))s)${last:+: $last}"; PASSES=$((PASSES + 1))
  else
    echo "FAIL $name (rc $rc, $((SECONDS - t0))s, log $T/$name.log)${last:+: $last}"; FAILS=$((FAILS + 1))
  fi
}
skip() { echo "SKIP $1 ($2)"; SKIPS=$((SKIPS + 1)); }
gpu_step() {  # a step that only means something on CUDA
  if [ $CPU_ONLY = 1 ]; then skip "$1" "--cpu-only"; else step "$@"; fi
}
H="import json, glob, sys; J = lambda p: json.load(open(p))"

echo "tinyvision device check: device $DEV, python $PY, datasets $D, scratch $T"
step environment $PY -c "
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'GPUs', torch.cuda.device_count(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '(no GPU)')
assert $CPU_ONLY or torch.cuda.is_available(), 'no CUDA GPU visible (use --cpu-only)'"
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)

# -- train on the CPU and on CUDA: the same config, accuracy close -----------------------------
RUN="--dataset digits --model digits-cnn --epochs 8 --quiet --no-report augment=translate tta=true
     batch_norm=true schedule=onecycle lr=3e-3"  # ~94% test on the CPU
step train-cpu $TV train $RUN --device cpu --run-dir "$T/cpu"
gpu_step train-cuda $TV train $RUN --device cuda --run-dir "$T/gpu"
if [ $CPU_ONLY = 1 ]; then G=$T/cpu; else G=$T/gpu; fi  # the run the later steps use
gpu_step cuda-bf16-recorded $PY -c "$H; r = J('$T/gpu/result.json'); print(r['device'], r['precision'])
assert r['device'].startswith('cuda') and r['precision'] == 'bf16'  # precision=auto on an H100/H200"
gpu_step cpu-vs-cuda-accuracy $PY -c "$H
a, b = (J(f'$T/{d}/result.json')['test']['accuracy'] for d in ('cpu', 'gpu')); print('cpu', a, 'cuda', b)
assert min(a, b) > 0.85 and abs(a - b) < 0.05  # seeds spread ~1-2 points at 8 epochs; 0.05 = 22 of 447 images"
step evaluate-reproduces-result $PY -c "$H
from tinyvision.inference import evaluate_run
r = J('$G/result.json')['test']; e = evaluate_run('$G', 'test', device='$DEV')
print('result.json', r['accuracy'], r['loss'], 'evaluate', e['accuracy'], e['loss'])
assert r['accuracy'] == e['accuracy'] and abs(r['loss'] - e['loss']) <= 1e-5 * r['loss']"

# -- SIGTERM mid-run (exit 130, checkpoint), resume, bit-exact with an uninterrupted run -------
if [ $CPU_ONLY = 1 ]; then EPOCHS=8; else EPOCHS=40; fi  # ~2.5 s an epoch on 2 CPU cores
R="--dataset digits --model mlp:512-512 --epochs $EPOCHS --batch-size 16 --device $DEV --quiet --no-report
   dropout=0.2 augment=translate schedule=onecycle deterministic=true threads=2"
t0=$SECONDS
$TV train $R --run-dir "$T/res" >"$T/sigterm-run.log" 2>&1 &
P=$!
for _ in $(seq 1200); do [ -f "$T/res/checkpoint.safetensors" ] && break; sleep 0.05; done
kill -TERM $P 2>/dev/null; wait $P; RC=$?
step sigterm-exit-130-with-checkpoint $PY -c "
from tinyvision.files import load_state
s = load_state('$T/res/checkpoint.safetensors'); print('exit', $RC, 'epoch', s['epoch'], 'step', s['step'], 'rng', sorted(s['rng']))
assert $RC == 130 and s['epoch'] < $EPOCHS and ('cuda' in s['rng'] or '$DEV' == 'cpu')"
step resume $TV train --resume "$T/res" --quiet --no-report
step uninterrupted $TV train $R --run-dir "$T/ref"
step resume-bit-exact $PY -c "
from tinyvision import runs
from tinyvision.files import load_weights
a, b = (load_weights(f'$T/{d}/model.safetensors')[0] for d in ('res', 'ref'))
ma, mb = (runs.read_metrics(f'$T/{d}') for d in ('res', 'ref'))
print(len(ma), 'epochs; val_loss', ma[-1]['val_loss'], mb[-1]['val_loss'])
assert [r['epoch'] for r in ma] == list(range(1, $EPOCHS + 1)) and all(a[k].equal(b[k]) for k in b)
assert [r['val_loss'] for r in ma] == [r['val_loss'] for r in mb]"

# -- the fused optimiser step: bit-identical to optimizer.step() on the device -----------------
step fused-step-bit-identical $PY - <<EOF
import copy, torch, torch.nn.functional as F
from tinyvision.config import make_config
from tinyvision.optim import build_optimizer, build_scheduler
from tinyvision._fused import FusedStep
dev = torch.device("$DEV")
for name in ("sgd", "adam", "adamw"):
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 10))
    a = a.to(dev, memory_format=torch.channels_last); b = copy.deepcopy(a)
    cfg = make_config(optimizer=name, schedule="onecycle", epochs=1, weight_decay=1e-3)
    oa, ob = (build_optimizer(n, cfg, fused=True) for n in (a, b))
    sa, sb = (build_scheduler(o, cfg, 8) for o in (oa, ob))
    fs, g = FusedStep(ob), torch.Generator(device=dev).manual_seed(1)
    for _ in range(8):
        x = torch.randn(16, 1, 8, 8, device=dev, generator=g); y = torch.randint(0, 10, (16,), device=dev, generator=g)
        oa.zero_grad(); F.cross_entropy(a(x), y).backward(); oa.step(); sa.step()
        fs.zero_grad(); F.cross_entropy(b(x), y).backward(); fs(); sb.step()
    assert fs.kernel_args is not None, f"{name}: the fast path never ran"
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())), name
    sa_, sb_ = oa.state_dict()["state"], ob.state_dict()["state"]
    assert all(torch.equal(sa_[k][f], sb_[k][f]) for k in sa_ for f in sa_[k]), name
print("sgd, adam, adamw: weights and optimiser state bit-identical on", dev)
EOF

# -- experiments in parallel processes ---------------------------------------------------------
step compare-jobs2 $TV compare digits-mlp digits-cnn --dataset digits --epochs 2 --device $DEV --jobs 2 --repeats 1 \
  --out "$T/cmp" --quiet --no-report
step compare-ran-on-$DEV $PY -c "$H
r = [J(p) for p in glob.glob('$T/cmp/*/runs/*/seed*/result.json')]; print([(x['status'], x['device']) for x in r])
assert len(r) == 2 and all(x['status'] == 'completed' and x['device'].startswith('$DEV') for x in r)"
step tune-jobs2 $TV tune examples/tune-digits.yaml epochs=2 device=$DEV --trials 2 --jobs 2 --out "$T/tune" --quiet
step tune-ran-on-$DEV $PY -c "$H
r = [J(p) for p in glob.glob('$T/tune/**/trials/*/result.json', recursive=True)]; print([(x['status'], x['device']) for x in r])
assert len(r) >= 2 and all(x['device'].startswith('$DEV') for x in r)"

# -- torchrun: 2 ranks with gloo on the CPU; NCCL with 2 GPUs, else the one-line refusal -------
DDP="-m torch.distributed.run --standalone --nproc-per-node 2 -m tinyvision.cli train --dataset digits
     --model digits-mlp --epochs 2 --quiet --no-report"
step torchrun-gloo-cpu $PY $DDP --device cpu threads=1 --run-dir "$T/ddp-cpu"
if [ $CPU_ONLY = 1 ]; then
  skip torchrun-nccl "--cpu-only"
elif [ "$GPUS" -ge 2 ]; then
  step torchrun-nccl-2-gpus $PY $DDP --device cuda --run-dir "$T/ddp-gpu"
else
  # each rank refuses at once with one line (exit 2), before any run directory exists
  step torchrun-nccl-refused-on-1-gpu bash -c "if $PY $DDP --device cuda --run-dir '$T/ddp-gpu' 2>'$T/nccl.err';
    then echo 'torchrun ran 2 NCCL ranks on 1 GPU'; exit 1; fi; [ ! -e '$T/ddp-gpu/result.json' ] &&
    grep 'tinyvision: error:' '$T/nccl.err' | sort | uniq -c | grep 'NCCL needs one GPU per process: use device=cpu (gloo)'"
fi

# -- predict, report, compile ------------------------------------------------------------------
mkdir -p "$T/img" && $PY -c "
from PIL import Image; from sklearn.datasets import load_digits
d = load_digits()
for i in range(16): Image.fromarray((d.images[i] * 15.9).astype('uint8')).save(f'$T/img/{i}.png')"
step predict bash -c "$TV predict '$G' '$T/img' --csv '$T/pred.csv' && test \$(wc -l <'$T/pred.csv') -eq 17"
step report bash -c "$TV report '$G' && test -s '$G/report.html' && $TV report $T/cmp/compare-* && test -s $T/cmp/compare-*/report.html"
step compile-$DEV $TV train --dataset digits --model digits-cnn --epochs 2 --device $DEV compile=true \
  --run-dir "$T/compiled" --quiet --no-report

# -- the quick benchmark on the device, with the time to 99% MNIST test accuracy ---------------
# (on a busy 2-core CPU without AVX-512 the --cpu-only run of this step took ~10 minutes)
STEP_TIMEOUT=$((CPU_ONLY ? 1200 : 480)) step benchmark-quick $PY -m benchmarks.run --quick --steps 100 --device $DEV --data-dir "$D" \
  --json "$T/bench.json"
step mnist-99-reached $PY -c "$H
b = J('$T/bench.json'); t = b['time_to_accuracy']['tinyvision']
print('device', b['device'], '- 99% MNIST test in', t.get('seconds'), 's from process start; test', t.get('accuracy'))
assert b['device'].startswith('$DEV') and t.get('reached')"

# -- the test suite's GPU tests: CPU vs CUDA accuracy, deterministic CUDA runs, FusedStep -------
if [ $CPU_ONLY = 1 ]; then
  skip gpu-marked-tests "--cpu-only"
elif ! $PY -c "import pytest" 2>/dev/null; then
  skip gpu-marked-tests "pytest not installed: bash scripts/setup --test"
else  # the torchrun test is the step above
  TINYVISION_GPU_TESTS=1 step gpu-marked-tests $PY -m pytest -q -m gpu tests/test_device.py -k "not torchrun"
fi

echo "$PASSES passed, $FAILS failed, $SKIPS skipped in $((SECONDS - START))s; logs in $T"
if [ $FAILS = 0 ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$T"; fi
exit $((FAILS > 0))
