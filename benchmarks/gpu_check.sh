#!/usr/bin/env bash
# Issue 24: the GPU figures, in one run (items 1, 2, 3, 4, 5; 6 when the machine has 2+ GPUs).
#
# Here (a machine with ../shared and a package registry), from the project root:
#     bash ../shared/tools/gpu/pack.sh 1000          # fills .gpu/ (ignored by git): wheels + CIFAR-10 JPEGs
# Then on the GPU machine (the device tool's `run`, carry [".gpu"], timeout_s 600), in two calls
# of under 10 minutes each (or both at once where no per-call limit applies: no argument):
#     bash benchmarks/gpu_check.sh a     # env, tests, convert --device, energy --measure, speed (~9 min)
#     bash benchmarks/gpu_check.sh b     # ImageNet-size models (~9 min)
# Everything it measures is written under $OUT (default ./gpu-out): logs and the results JSON
# (speed_cuda.json, imagenet_cost_cuda.json). Copy the JSON into benchmarks/results/ and run
# `python benchmarks/run.py summary` here to put them in benchmarks/RESULTS.md.
# Each step has its own time limit, so a slow step costs only itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
[ -d .gpu/whl ] || { echo "gpu_check: no .gpu/ here: run 'bash ../shared/tools/gpu/pack.sh' first and carry .gpu" >&2; exit 2; }
step() {  # step NAME SECONDS COMMAND...: run it through .gpu/run.sh, log to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" bash .gpu/run.sh "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - start)) s"; tail -n 4 "$OUT/$name.log"
}
export ANNSNN_HOME=/tmp/annsnn-home OMP_NUM_THREADS=8
part=${1:-ab}
if [[ $part == *a* ]]; then
# 0. the machine, and item 5: torch's version here (2.11 seen so far) against the 0-dim fingerprint fix
step env 60 python3 -c "import torch, torchvision, annsnn, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count(), torch.cuda.get_device_name(0)); print('python', sys.version.split()[0])"
# tests run from /tmp so the installed wheel (with annsnn.cli) is imported, not ./annsnn
step tests 150 bash -c "cd /tmp && python3 -m pytest -q -p no:cacheprovider -x $PWD/tests/test_device.py $PWD/tests/test_evaluation.py $PWD/tests/test_simulate.py -k 'device or 0_dim or fingerprint or auto_chunk or readout or rank or torchrun' --rootdir $PWD"
# items 1 and 4: convert on the GPU (says which device ran), then energy measured over >= 1 s windows
step convert 60 python3 -m annsnn convert --device cuda --out /tmp/d.snn.pt --json "$OUT/convert.json"
step energy 90 python3 -m annsnn energy /tmp/d.snn.pt --device cuda --T 8,32 --samples 360 --measure --json "$OUT/energy.json"
# item 2: annsnn vs SpikingJelly 2.0 multi-step, B x T grid, GPU name and torch version recorded
step speed 190 python3 benchmarks/run.py speed --device cuda
cp benchmarks/results/speed_cuda.json "$OUT/" 2>/dev/null
fi
if [[ $part == *b* ]]; then
# item 3: ImageNet-size models, default pipeline at N=32 on the GPU, ratios to one ANN pass, simulate images/s at T=32
step imagenet 540 python3 benchmarks/imagenet_cost.py --device cuda --images 32
cp benchmarks/results/imagenet_cost_cuda.json "$OUT/" 2>/dev/null
fi
echo "gpu_check: wrote $(ls "$OUT" | tr '\n' ' ')"
