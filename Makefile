# Two commands do all the set-up on a fresh machine:
#   make demo   - create/reuse .venv, install, run the main job on the bundled digits data
#   make test   - create/reuse .venv, install, run the test suite
# Shared real data (../shared) is used when present; tests that need it skip otherwise.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Empty when ../shared is absent: the shared tests then skip. When set (CI passes SHARED=...),
# a missing or incomplete folder fails them (tests/conftest.py).
SHARED ?= $(wildcard $(abspath ../shared))

.PHONY: setup demo test test-fast regenerate reports bench embedded clean threeway threeway-stdp report-robustness report-measured coverage lowlat

# setuptools' generic editable-install notice (a UserWarning box) says nothing about this project
$(BIN)/.annsnn-installed: pyproject.toml
	@echo "setting up $(VENV): $(TORCH_PINS) and annsnn"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	@PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

setup: $(BIN)/.annsnn-installed

demo: setup
	$(BIN)/annsnn demo --out-dir demo-out

test: setup
	ANNSNN_SHARED=$(SHARED) $(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: setup
	ANNSNN_SHARED=$(SHARED) $(BIN)/python -m pytest -q -m "not slow"

# Retrain the bundled checkpoint (model_zoo/checkpoints/digits_cnn.pt). Seeded, but the weights depend on the CPU
# and torch build (retrained on another machine they differ from the bundled file): every README figure then needs re-running.
embedded: setup
	$(BIN)/annsnn zoo train digits_cnn --data digits --epochs 30 --lr 2e-3 --seed 0 --out model_zoo/checkpoints/digits_cnn.pt

# Regenerate reports/ (not run by CI; needs ../shared).
# Issue 12: method x T on the shared ResNet-20/32 and SpikingJelly's recipes, then the
# low-latency section of reports/cifar10.md (about 2 hours on 2 cores)
lowlat: setup
	ANNSNN_SHARED=$(SHARED) $(BIN)/python benchmarks/low_latency.py --arch resnet20 --methods threshold+step-bias,threshold+step-bias:delay=0,threshold+step-bias:delay=0:scale=1.0 --T 8,16,32,64 --heldout 1024
	ANNSNN_SHARED=$(SHARED) $(BIN)/python benchmarks/low_latency.py --arch resnet20 --methods threshold+step-bias:delay=0:samples=64 --T 8,16 --heldout 1024 --append
	ANNSNN_SHARED=$(SHARED) $(BIN)/python benchmarks/low_latency.py --arch resnet20 --methods none,best-flags,threshold:delay=0,threshold+bias:delay=0 --T 8,16,32,64 --append
	ANNSNN_SHARED=$(SHARED) $(BIN)/python benchmarks/low_latency.py --arch resnet32 --methods threshold+step-bias,threshold+step-bias:delay=0 --T 8,16,32,64 --heldout 1024
	ANNSNN_SHARED=$(SHARED) $(BIN)/python benchmarks/low_latency.py --arch resnet32 --methods threshold+step-bias:delay=0:scale=1.0 --T 8,16 --heldout 1024 --append
	ANNSNN_SHARED=$(SHARED) $(BIN)/python benchmarks/run.py suite_low_latency calibration_cost sj_low_latency
	ANNSNN_SHARED=$(SHARED) $(BIN)/python reports/generate.py lowlat

# Every report and benchmark result at one code commit (about 2 hours on 2 cores; see the script's header).
regenerate: setup
	ANNSNN_SHARED=$(SHARED) PY=$(BIN)/python bash reports/regenerate.sh

reports: setup
	ANNSNN_SHARED=$(SHARED) $(BIN)/python reports/generate.py

# Robustness (noise, FGSM crafted on the ANN and on the SNN) and measured time/memory/energy
# beside the estimates; CPU only, 1 thread, niced (tens of minutes on 2 shared cores).
report-robustness: setup
	ANNSNN_SHARED=$(SHARED) nice -n 10 env OMP_NUM_THREADS=1 $(BIN)/python reports/robustness.py

report-measured: setup
	ANNSNN_SHARED=$(SHARED) nice -n 10 env OMP_NUM_THREADS=1 $(BIN)/python reports/measured.py
# Every torchvision classifier through convert/simulate/count/save (slow: one process per model).
coverage: setup
	nice $(BIN)/python reports/coverage.py

bench: setup
	ANNSNN_SHARED=$(SHARED) $(BIN)/python benchmarks/run.py

clean:
	rm -rf demo-out .pytest_cache

# The three-way table in reports/mnist.md: ANN, converted SNN, directly trained SNN (issue 15; needs ../shared),
# and the unsupervised STDP network beside an ANN of its size (issue 28). threeway-stdp redoes only the STDP rows
# (trains the STDP network unless STDP_CKPT exists, then counts it).
# STDP_ARGS: extra options, e.g. --samples 60000 (default: 20,000 training images, 1 epoch).
STDP_ARGS ?=
STDP_CKPT ?= .annsnn/stdp_mnist-mnist-stdp400.pt
$(STDP_CKPT):
	mkdir -p $(dir $@)
	OMP_NUM_THREADS=1 nice $(BIN)/annsnn zoo train stdp_mnist --snn --rule stdp --data mnist --data-root $(SHARED)/data $(STDP_ARGS) --out $@

threeway: setup $(STDP_CKPT)
	ANNSNN_SHARED=$(SHARED) OMP_NUM_THREADS=1 nice $(BIN)/python reports/threeway.py --stdp $(STDP_CKPT)

threeway-stdp: setup $(STDP_CKPT)
	ANNSNN_SHARED=$(SHARED) OMP_NUM_THREADS=1 nice $(BIN)/python reports/threeway.py --stdp $(STDP_CKPT) --only-stdp
