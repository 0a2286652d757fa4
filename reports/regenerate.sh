#!/usr/bin/env bash
# Regenerate reports/ and benchmarks/results at one code commit (benchmarks/provenance.py):
# two lanes of one thread each, on 2 cores about 1 hour 40 minutes. Needs ../shared (ANNSNN_SHARED).
#   bash reports/regenerate.sh            # everything below
#   LOGS=dir bash reports/regenerate.sh   # logs (default .annsnn/regenerate)
# Not re-run here (each keeps the commit it names; benchmarks/RESULTS.md lists them apart):
# SpikingJelly's 80-minute recipes (sj_low_latency, accuracy), sj_full_test,
# distributed, the VGG19 calibration and NIR timing benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export ANNSNN_SHARED=${ANNSNN_SHARED:-$(cd .. && pwd)/shared}
LOGS=${LOGS:-.annsnn/regenerate}
mkdir -p "$LOGS"
commit=$($PY -c 'import sys; sys.path.insert(0, "benchmarks"); from provenance import code_commit; print(code_commit())')
case "$commit" in *dirty*|unknown) echo "error: the code has uncommitted changes ($commit): commit first, so every report names one commit" >&2; exit 2;; esac
echo "regenerating at code commit $commit; logs in $LOGS"
run() { local name=$1; shift; local t0=$SECONDS; echo "[$(date +%H:%M:%S)] start $name"; "$@" >"$LOGS/$name.log" 2>&1 || { echo "FAILED $name (see $LOGS/$name.log)"; return 1; }; echo "[$(date +%H:%M:%S)] done $name ($((SECONDS - t0)) s)"; }
export OMP_NUM_THREADS=1 BENCH_THREADS=1
STDP_CKPT=.annsnn/stdp_mnist-mnist-stdp400.pt
mkdir -p "$(dirname "$STDP_CKPT")"  # convert/train refuse a missing output folder
lane_a() {
  run coverage nice $PY reports/coverage.py --fresh
  run robustness nice $PY reports/robustness.py
  run measured nice $PY reports/measured.py
  [ -f $STDP_CKPT ] || run stdp_train nice .venv/bin/annsnn zoo train stdp_mnist --snn --rule stdp --data mnist --data-root "$ANNSNN_SHARED/data" --out $STDP_CKPT
  run threeway nice $PY reports/threeway.py --stdp $STDP_CKPT
  run speed nice $PY benchmarks/run.py speed overhead
  run imagenet_cost nice $PY benchmarks/imagenet_cost.py --device cpu --images 64 --models mobilenet_v2,resnet50
  run cost nice $PY benchmarks/run.py calibration_cost suite_low_latency nir_target
  run mnist nice $PY reports/generate.py mnist
  run cifar nice $PY reports/generate.py cifar  # its low-latency section is rewritten by 'lowlat' below, once lane B is done
  run structure nice $PY reports/generate.py structure
}
lane_b() {  # every step that writes benchmarks/results/low_latency.json: one lane, in order
  LL="nice $PY benchmarks/low_latency.py"
  run ll_jpeg $LL --arch resnet20_jpeg --methods threshold+step-bias --T 2,4,8,16,32,64 --test 10000 --heldout 1024
  run ll_jpeg_burst $LL --arch resnet20_jpeg --methods threshold+step-bias:K=4 --T 2,4,8 --test 10000 --heldout 1024 --append
  run ll_jpeg_burst6 $LL --arch resnet20_jpeg --methods threshold+step-bias:K=6 --T 2 --test 10000 --heldout 1024 --append
  run ll_jpeg_burst5 $LL --arch resnet20_jpeg --methods threshold+step-bias:K=5 --T 2,4 --test 10000 --heldout 1024 --append
  run ll_jpeg_nir $LL --arch resnet20_jpeg --methods nir --T 8,16,32 --test 10000 --heldout 1024 --append
  run ll_resnet20 $LL --arch resnet20 --methods threshold+step-bias --T 8,16,32,64 --test 1000 --heldout 1024
  run ll_resnet32 $LL --arch resnet32 --methods threshold+step-bias --T 8,16,32,64 --test 1000 --heldout 1024
  run sj_heldout nice $PY benchmarks/run.py sj_heldout
}
lane_a & a=$!
lane_b & b=$!
status=0
wait $a || status=1
wait $b || status=1
run comparison $PY reports/generate.py comparison lowlat
run summary $PY benchmarks/run.py summary
echo "finished at code commit $commit (status $status)"
exit $status
