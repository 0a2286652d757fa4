"""annsnn benchmarks: ratios measured side by side in one run (these machines are noisy).

    python benchmarks/run.py speed        # issue 4: SNN vs T x ANN, T sweep, memory vs T (+ SpikingJelly)
    python benchmarks/run.py overhead     # issue 5: analyzer counting overhead
    python benchmarks/run.py calibration  # issue 3: calibration memory and time on VGG19 224
    python benchmarks/run.py distributed  # issue 7: torchrun 2 processes x 1 thread vs 1 process x 2 threads
    python benchmarks/run.py accuracy     # issue 3: ResNet-20 (shared) vs SpikingJelly 2.0 RateCodingRecipe
    python benchmarks/run.py nir          # issue 15: NIR export + re-import vs one evaluate pass (T=8, 100 images)
    python benchmarks/run.py sj_heldout        # issue 12: SpikingJelly RateCoding on annsnn's held-out training images (4 min)
    python benchmarks/run.py sj_full_test      # issue 12: annsnn's default vs SJ RateCoding at T=64 on all 10,000 test images, paired (McNemar); 31 min
    python benchmarks/run.py calibration_cost  # issue 12: each calibration method at N=32: time and peak memory / one ANN pass
    python benchmarks/run.py sj_low_latency  # issue 12: SpikingJelly's recipes on the images of low_latency.py (annsnn's side: benchmarks/low_latency.py)
    python benchmarks/run.py robustness   # issue 14: 21 FGSM eps at T=32 vs 21 evaluates + the gradient pass (ROBUSTNESS_IMAGES=100)
    python benchmarks/run.py nir_target   # issue 26: convert --target nir vs the default, digits demo and a VGG, T=8/16/32
    python benchmarks/run.py all

Each writes benchmarks/results/<name>.json; benchmarks/README.md records the outputs.
Memory is the peak resident-set growth of a fresh subprocess (VmHWM reset via
/proc/self/clear_refs), so imports and the model's own weights are not counted.
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import code_commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("ANNSNN_SHARED", ROOT.parent / "shared"))


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform()}


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def commit() -> str:
    """The code commit these numbers come from (``benchmarks/provenance.py``)."""
    return code_commit(ROOT)


def interleaved(fns: dict, repeats: int = 5, warmup: bool = True) -> dict[str, float]:
    """Median wall time of each ``fns[name]()`` over ``repeats`` rounds; every round runs
    every function once, in turn, so slow drifts of a noisy machine hit all of them alike."""
    for fn in fns.values() if warmup else ():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def save(name: str, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data["machine"] = machine()
    data["commit"] = commit()
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))


# ---------------------------------------------------------------------------


def _vgg11(batch: int):
    from annsnn.convert import ConversionOptions
    from annsnn.modes import parse_mode
    from annsnn.pipeline import ann_to_snn
    from annsnn.zoo import build

    torch.manual_seed(0)
    model = build("vgg11_cifar").eval()
    x = torch.rand(batch, 3, 32, 32)
    snn, _ = ann_to_snn(model, [x], input_shape=(3, 32, 32), options=ConversionOptions.plain(mode=parse_mode("99.9")))
    return model, snn, x


def _spikingjelly(model, x):
    """SpikingJelly 2.0's conversion of ``model`` (RateCodingRecipe, same mode), run two ways:
    single-step (``T`` calls, its default) and multi-step (its IF nodes in step mode 'm', every
    stateless layer over the merged ``[T*B, ...]`` batch, as ``SeqToANNContainer`` does)."""
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.ann2snn import FXConverter, RateCodingRecipe

    import copy

    sj = FXConverter(RateCodingRecipe([(x, torch.zeros(len(x)))], mode="99.9%")).convert(copy.deepcopy(model)).eval()

    def single(T: int):
        functional.reset_net(sj)
        out = 0
        with torch.no_grad():
            for _ in range(T):
                out = out + sj(x)
        return out

    class _Merged(torch.nn.Module):  # [T*B, ...] -> the node's multi-step [T, B, ...] -> [T*B, ...]
        def __init__(self, node, T: int) -> None:
            super().__init__()
            self.node, self.T = node, T

        def forward(self, z):
            return self.node(z.reshape(self.T, -1, *z.shape[1:])).reshape(z.shape)

    multi_nets: dict = {}

    def multi(T: int):
        if T not in multi_nets:
            net = copy.deepcopy(sj)
            for name, module in list(net.named_modules()):
                if isinstance(module, neuron.BaseNode):
                    module.step_mode = "m"
                    net.set_submodule(name, _Merged(module, T))
            multi_nets[T] = net
        net = multi_nets[T]
        functional.reset_net(net)
        with torch.no_grad():
            return net(x.repeat(T, *([1] * (x.dim() - 1)))).reshape(T, len(x), -1).sum(0)

    return single, multi


def speed() -> None:
    from annsnn.free_heap import heap_reuse
    from annsnn.simulate import simulate

    batch, T = 64, 16
    model, snn, x = _vgg11(batch)
    sj_single, sj_multi = _spikingjelly(model, x)
    with torch.no_grad(), heap_reuse():  # every contender under the allocator setting simulate runs with (annsnn.free_heap)
        t = interleaved({
            "ann": lambda: snn.ann(x),
            "annsnn": lambda: simulate(snn, x, [T]),
            "sj_single": lambda: sj_single(T),
            "sj_multi": lambda: sj_multi(T),
        }, repeats=5)
        sweep = interleaved({"sweep": lambda: simulate(snn, x, [5, 20, 50]), "single": lambda: simulate(snn, x, [50])}, repeats=5)
    mem16 = _peak_subprocess("snn", 16)
    mem256 = _peak_subprocess("snn", 256)
    ann = t["ann"]
    save("speed", {
        "model": "vgg11_cifar, RANDOM weights (untrained), BN folded, AvgPool (no max-pool), mode 99.9", "batch": batch, "T": T,
        "method": "interleaved rounds (ANN, annsnn, SJ single-step, SJ multi-step), median of 5 after one warm-up, all inside annsnn.free_heap.heap_reuse",
        "ann_forward_s": ann, "annsnn_snn_s": t["annsnn"], "spikingjelly_single_step_s": t["sj_single"], "spikingjelly_multi_step_s": t["sj_multi"],
        "annsnn_ratio_vs_T_ann": t["annsnn"] / (T * ann),
        "spikingjelly_single_step_ratio_vs_T_ann": t["sj_single"] / (T * ann),
        "spikingjelly_multi_step_ratio_vs_T_ann": t["sj_multi"] / (T * ann),
        "sweep_5_20_50_s": sweep["sweep"], "single_50_s": sweep["single"], "sweep_ratio": sweep["sweep"] / sweep["single"],
        "peak_mb_T16": mem16, "peak_mb_T256": mem256, "memory_ratio_T256_vs_T16": mem256 / mem16,
        "targets": {"annsnn_ratio_vs_T_ann": "<= 1.2", "sweep_ratio": "<= 1.05", "memory_ratio_T256_vs_T16": "<= 1.5"},
    })


def _synced(fn, device):
    def run():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return run


def speed_gpu(device_name: str, batches=(64, 256, 1024), time_steps=(8, 16, 32)) -> None:
    """Issue 24 item 2 on a GPU: annsnn simulate vs SpikingJelly 2.0 multi-step vs T x ANN and one ANN pass over the merged [T*B]
    batch, VGG-11 random weights, B in {64, 256, 1024}, T in {8, 16, 32}; interleaved,
    synchronized, median of 5 after a warm-up. Records the GPU name and torch version."""
    from annsnn.simulate import simulate

    device = torch.device(device_name)
    torch.backends.cudnn.benchmark = False
    rows = []
    for batch in batches:
        model, snn, x_cpu = _vgg11(batch)
        import spikingjelly.activation_based.functional as sjf

        snn = snn.to(device)
        x = x_cpu.to(device)
        for T in time_steps:
            xt = x.repeat(T, 1, 1, 1)
            fns = {
                "ann": _synced(lambda: snn.ann(x), device),
                "ann_merged": _synced(lambda xt=xt: snn.ann(xt), device),
                "annsnn": _synced(lambda T=T: simulate(snn, x, [T]), device),
            }
            nets = _sj_multi_nets(model, x_cpu, T, device)
            for backend, net in nets.items():
                def run_sj(net=net, xt=xt, T=T):
                    sjf.reset_net(net)
                    return net(xt).reshape(T, batch, -1).sum(0)
                fns[f"sj_{backend}"] = _synced(run_sj, device)
            with torch.no_grad():
                t = interleaved(fns, repeats=5)
            sj_best = min(v for k, v in t.items() if k.startswith("sj_"))
            rows.append({"batch": batch, "T": T, **{f"{k}_s": v for k, v in t.items()},
                         "annsnn_over_T_ann": t["annsnn"] / (T * t["ann"]), "annsnn_over_sj_best": t["annsnn"] / sj_best,
                         "annsnn_over_ann_merged": t["annsnn"] / t["ann_merged"], "sj_best_over_T_ann": sj_best / (T * t["ann"])})
            print(rows[-1], flush=True)
        del snn, x
        if device.type == "cuda":
            torch.cuda.empty_cache()
    save(f"speed_{device.type}", {
        "model": "vgg11_cifar, RANDOM weights, BN folded, mode 99.9, 32x32 inputs", "device": device_name,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "torch": torch.__version__, "cuda": torch.version.cuda,
        "method": "interleaved (ANN, ANN over [T*B], annsnn, SJ multi-step per backend), synchronized, median of 5 after one warm-up",
        "rows": rows,
        "targets": {"annsnn_over_sj_best": "<= 0.8 for every B, T", "annsnn_over_ann_merged": "<= 1.1 at B=256, T=16"},
    })


def _sj_multi_nets(model, x_cpu, T: int, device) -> dict:
    """SpikingJelly 2.0's conversion in multi-step mode for T, on ``device``."""
    import copy

    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based.ann2snn import FXConverter, RateCodingRecipe

    sj = FXConverter(RateCodingRecipe([(x_cpu, torch.zeros(len(x_cpu)))], mode="99.9%")).convert(copy.deepcopy(model)).eval()
    # SpikingJelly 2.0's IFNode has no backend switch: if_multi_step picks its kernel by device
    net = copy.deepcopy(sj)
    for name, module in list(net.named_modules()):
        if isinstance(module, neuron.BaseNode):
            module.step_mode = "m"
            net.set_submodule(name, _MergedNode(module, T))
    nets = {"multi": net.to(device)}
    return nets


class _MergedNode(torch.nn.Module):
    """[T*B, ...] -> the node's multi-step [T, B, ...] -> [T*B, ...] (SeqToANNContainer's merge)."""

    def __init__(self, node, T: int) -> None:
        super().__init__()
        self.node, self.T = node, T

    def forward(self, z):
        return self.node(z.reshape(self.T, -1, *z.shape[1:])).reshape(z.shape)


def _peak_subprocess(kind: str, T: int) -> float:
    """Peak RSS growth of simulating T steps in a fresh process that only loaded the SNN."""
    import tempfile

    from annsnn.artifact import save_snn

    _, snn, _ = _vgg11(64)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/vgg11.snn.pt"
        save_snn(snn, path)
        code = f"""
import sys, torch
sys.path.insert(0, {str(ROOT / 'benchmarks')!r})
from run import _peak_mb
from annsnn.artifact import load_snn
from annsnn.simulate import simulate
snn = load_snn({path!r})
x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    print(_peak_mb(lambda: simulate(snn, x, [{T}])))
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return float(line.split()[1]) / 1024  # MB
    raise RuntimeError(field)


def _peak_mb(fn) -> float:
    """Peak RSS growth (MB) while running ``fn``."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    fn()
    return _status("VmHWM") - before


def overhead() -> None:
    from annsnn.evaluation import analyze

    batch, T = 64, 16
    _, snn, x = _vgg11(batch)

    def run(count: bool):
        analyze(snn, [x], [T], count=count)

    with torch.no_grad():
        t = interleaved({"plain": lambda: run(False), "counted": lambda: run(True)}, repeats=5)
    plain, counted = t["plain"], t["counted"]
    save("overhead", {"model": "vgg11_cifar", "batch": batch, "T": T, "without_counting_s": plain, "with_counting_s": counted, "ratio": counted / plain, "target": "<= 1.15"})


def calibration() -> None:
    code = """
import sys, time, torch, torchvision
sys.path.insert(0, {root!r})
from run import _peak_mb
from annsnn.graph import canonicalize
from annsnn.convert import Calibrator
torch.manual_seed(0)
model = torchvision.models.vgg19().eval()
batches = [torch.rand(16, 3, 224, 224) for _ in range(2)]
kind = sys.argv[1]
def ann():
    with torch.no_grad():
        for b in batches: model(b)
if kind == "ann":
    t = time.perf_counter(); mb = _peak_mb(ann); print(mb, time.perf_counter() - t)
else:
    cal = Calibrator(canonicalize(model, input_shape=(3, 224, 224)), channel_wise=False)
    def observe():
        for b in batches: cal.observe(b)
    t = time.perf_counter(); mb = _peak_mb(observe); print(mb, time.perf_counter() - t)
""".format(root=str(ROOT / "benchmarks"))
    results = {}
    for kind in ("ann", "calibration"):
        out = subprocess.run([sys.executable, "-c", code, kind], capture_output=True, text=True, check=True)
        mb, seconds = map(float, out.stdout.strip().splitlines()[-1].split())
        results[kind] = {"peak_mb": mb, "seconds": seconds}
    save("calibration", {
        "model": "torchvision vgg19, 3x224x224, batch 16, 2 batches, percentile histograms", **results,
        "memory_ratio": results["calibration"]["peak_mb"] / results["ann"]["peak_mb"],
        "time_ratio": results["calibration"]["seconds"] / results["ann"]["seconds"],
        "targets": {"memory_ratio": "<= 1.5", "time_ratio": "<= 2.5"},
    })


def calibration_cost() -> None:
    """Issue 12: each calibration method's conversion at N=32 on the shared ResNet-20, as
    ratios to one ANN pass over the same 1,024 calibration images (batch 128): wall time
    (median of 3, interleaved with the ANN pass) and peak resident-set growth. Each method
    runs in ``COST_REPEATS`` (default 3) fresh subprocesses, because the peak resident set
    depends on how the C heap happens to be laid out: the row gives the run with the median
    memory ratio, the median time ratio, and every run's ratios. The images are loaded
    before either is measured."""
    from annsnn.calibration import CALIBRATIONS

    code = """
import sys, time, statistics, torch
sys.path.insert(0, {root!r})
from run import _peak_mb, SHARED
from annsnn.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset, make_loader
from annsnn.model_files import load_model
from annsnn.pipeline import ann_to_snn
from low_latency import _options
torch.manual_seed(0)
method = sys.argv[1]
net = load_model(SHARED / "models" / "cifar10-resnet" / "resnet20-12fca82f.th", "resnet20").module.eval()
calib = [x for x, _ in make_loader(load_dataset(f"imagefolder:{{SHARED / 'data' / 'CIFAR10-jpeg'}}", "train"), 128, 1024)]
mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
norm = (list(IMAGENET_MEAN), list(IMAGENET_STD))
import dataclasses
name, _, samples = method.partition("/")  # NAME/K: the same with --bias-samples K
options = _options(name, 32)  # exactly the options of benchmarks/low_latency.py
if samples:
    options = dataclasses.replace(options, bias_samples=int(samples))
def ann():
    with torch.no_grad():
        for x in calib:
            net((x - mean) / std)
def convert():
    ann_to_snn(net, iter(calib), input_shape=(3, 32, 32), options=options, normalization=norm)
ann_mb = _peak_mb(ann)
conv_mb = _peak_mb(convert)
ann_s, conv_s = [], []
for _ in range(3):
    t = time.perf_counter(); ann(); ann_s.append(time.perf_counter() - t)
    t = time.perf_counter(); convert(); conv_s.append(time.perf_counter() - t)
print(ann_mb, conv_mb, statistics.median(ann_s), statistics.median(conv_s))
""".format(root=str(ROOT / "benchmarks"))
    # COST_METHODS=a,b re-measures only those; the file keeps the other methods' rows, each
    # with the commit it was measured on
    everything = [*CALIBRATIONS, f"{next(iter(CALIBRATIONS))}/64"]  # the last: the default with --bias-samples 64
    chosen = [m for m in os.environ.get("COST_METHODS", "").split(",") if m] or everything
    old = json.loads((RESULTS / "calibration_cost.json").read_text()) if (RESULTS / "calibration_cost.json").is_file() else {}
    rows = {m: dict(row, commit=row.get("commit", old.get("commit", "?"))) for m, row in old.get("rows", {}).items() if m not in chosen}
    repeats = int(os.environ.get("COST_REPEATS", "3"))  # fresh processes per method: peak RSS varies with the C heap's layout
    for method in chosen:
        runs = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", code, method], capture_output=True, text=True, check=True)
            runs.append(tuple(map(float, out.stdout.strip().splitlines()[-1].split())))
        middle = sorted(runs, key=lambda r: r[1] / r[0])[len(runs) // 2]  # the run with the median memory ratio
        ann_mb, conv_mb, ann_s, conv_s = middle
        rows[method] = {"ann_peak_mb": ann_mb, "conversion_peak_mb": conv_mb, "memory_ratio": conv_mb / ann_mb,
                        "ann_pass_s": ann_s, "conversion_s": conv_s, "time_ratio": statistics.median(r[3] / r[2] for r in runs),
                        "memory_ratios": [r[1] / r[0] for r in runs], "time_ratios": [r[3] / r[2] for r in runs], "processes": len(runs), "commit": commit()}
        print(method, rows[method], flush=True)
    save("calibration_cost", {"model": "shared ResNet-20 (trained weights), 1,024 CIFAR10-jpeg train images, batch 128, N = 32",
                              "rows": {m: rows[m] for m in everything if m in rows}, "default": next(iter(CALIBRATIONS)),
                              "targets": {"time_ratio": "<= 40 (default)", "memory_ratio": "<= 2 (default)"}})


def trained_digits_vgg19(xtr: torch.Tensor, ytr: torch.Tensor, epochs: int = 8) -> torch.nn.Module:
    """The reduced VGG19 of tests/test_convert.py (spiking max-pools) trained on the digits
    at 3x32x32 as the tests train it, from the initial weights of ``torch.manual_seed(0)``:
    the same net on every run, and the caller's generator is left as it was."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_convert import _digits32, _train_digits32, _vgg19_reduced

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _train_digits32(_vgg19_reduced(), _digits32(xtr), ytr, epochs=epochs).eval()


def suite_low_latency() -> None:
    """Issue 12: the test suite's trained nets at T=64 with the default pipeline
    (``ConversionOptions.low_latency(64)``): the MobileNetV2 of tests/data (width 0.5,
    ReLU6, 35 IF layers in series) and the reduced VGG19 with spiking max-pools, trained
    here exactly as tests/test_convert.py trains it. Calibration: the first 1,024 digits
    training images; top-1 on all 360 test digits (one digit = 0.28 points)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_convert import MOBILENET_V2_DIGITS32, _digits32, _mobilenet_v2

    from annsnn.convert import ConversionOptions
    from annsnn.data import load_dataset
    from annsnn.pipeline import ann_to_snn
    from annsnn.simulate import simulate

    (xtr, ytr), (xte, yte) = (load_dataset("digits", split).tensors for split in ("train", "test"))
    calib, x = _digits32(xtr[:1024]), _digits32(xte)
    mobilenet = _mobilenet_v2()
    mobilenet.load_state_dict(torch.load(MOBILENET_V2_DIGITS32, weights_only=True)["state_dict"])
    vgg = trained_digits_vgg19(xtr, ytr)
    nets = {"mobilenet_v2_w05_digits32 (tests/data weights)": mobilenet.eval(), "vgg19_reduced_spiking_maxpool (trained here, 8 epochs)": vgg.eval()}
    rows = {}
    for name, model in nets.items():
        with torch.no_grad():
            ann = float((model(x).argmax(1) == yte).float().mean())
        options = ConversionOptions.low_latency(64)
        snn, _ = ann_to_snn(model, [calib[i : i + 128] for i in range(0, len(calib), 128)], input_shape=(3, 32, 32), options=options)
        top1 = float((simulate(snn, x, 64).predictions(64) == yte).float().mean())
        rows[name] = {"ann_top1": ann, "snn_top1": top1, "gap_points": 100 * (ann - top1), "T": 64, "options": options.to_dict()}
        print(name, rows[name], flush=True)
    save("suite_low_latency", {"rows": rows, "calibration_images": int(calib.shape[0]), "test_images": int(x.shape[0]), "target": "gap <= 0.5 points at T=64"})


def nir_target() -> None:
    """Issue 26: ``convert --target nir`` (IF-search thresholds, a constant bias folded into
    the synapses, no readout delay) beside the default at T = N = 8 / 16 / 32 on the digits
    demo (the bundled CNN, exportable) and the reduced VGG19 of tests/test_convert.py (trained
    here, 8 epochs; its spiking max-pools have no NIR form, so the calibration's accuracy is
    the measure). Calibration: the first 1,024 digits training images; top-1 on all 360 test
    digits (one digit = 0.28 points). ResNet-20-JPEG: benchmarks/low_latency.py --methods nir."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_convert import _digits32

    from annsnn.convert import ConversionOptions
    from annsnn.data import load_dataset
    from annsnn.errors import UsageError
    from annsnn.model_files import load_model
    from annsnn.layers import Normalize
    from annsnn.nir_io import to_nir
    from annsnn.nir_target import fold_constant_bias, nir_options
    from annsnn.pipeline import ann_to_snn
    from annsnn.simulate import simulate
    from annsnn.zoo import embedded_checkpoint

    (xtr, ytr), (xte, yte) = (load_dataset("digits", split).tensors for split in ("train", "test"))
    loaded = load_model(embedded_checkpoint())
    norm = loaded.record["normalization"]
    demo = torch.nn.Sequential(Normalize(norm["mean"], norm["std"]), loaded.module.eval()).eval()
    vgg = trained_digits_vgg19(xtr, ytr)
    nets = {"digits demo CNN (bundled)": (demo, xtr[:1024], xte), "vgg19_reduced_spiking_maxpool (trained here, 8 epochs)": (vgg, _digits32(xtr[:1024]), _digits32(xte))}
    rows: dict = {}
    for name, (model, calib, x) in nets.items():
        with torch.no_grad():
            ann = float((model(x).argmax(1) == yte).float().mean())
        row: dict = {"ann_top1": ann}
        for T in (8, 16, 32):
            for label, options in (("default", ConversionOptions.low_latency(T)), ("nir", nir_options(T))):
                snn, _ = ann_to_snn(model, [calib[i : i + 128] for i in range(0, len(calib), 128)], input_shape=tuple(calib.shape[1:]), options=options)
                exports = None
                if label == "nir":
                    fold_constant_bias(snn)
                    try:
                        to_nir(snn)
                        exports = True
                    except UsageError as exc:  # the model's own layers (spiking max-pool) may have no NIR form
                        exports = str(exc)[:200]
                top1 = float((simulate(snn, x, T).predictions(T) == yte).float().mean())
                row[f"{label}@{T}"] = {"top1": top1, "gap_points": 100 * (ann - top1), **({"exports": exports} if label == "nir" else {})}
                print(name, label, T, f"{100 * top1:.2f} (ANN {100 * ann:.2f})", flush=True)
        rows[name] = row
    save("nir_target", {"rows": rows, "calibration_images": 1024, "test_images": int(yte.shape[0])})


def distributed() -> None:
    """2 processes x 1 thread vs the fair baseline, 1 process x 2 threads (the same 2 cores),
    on the shared ResNet-20; repeats interleaved, median of 3 (each run is a whole command)."""
    import tempfile

    weights = SHARED / "models" / "cifar10-resnet" / "resnet20-12fca82f.th"
    data = f"imagefolder:{SHARED / 'data' / 'CIFAR10-jpeg'}"
    one_thread = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    two_threads = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    with tempfile.TemporaryDirectory() as tmp:
        for env in (one_thread, two_threads):
            env["ANNSNN_HOME"] = tmp
        snn = f"{tmp}/r20.snn.pt"
        subprocess.run([sys.executable, "-m", "annsnn", "convert", str(weights), "--arch", "resnet20", "--data", data, "--calib-samples", "512", "--out", snn], check=True, capture_output=True, env=two_threads)
        args = ["evaluate", snn, "--T", "64", "--samples", "512", "--batch-size", "32", "--json"]
        t = interleaved({
            "one_process_two_threads": lambda: subprocess.run([sys.executable, "-m", "annsnn", *args, f"{tmp}/one.json"], check=True, capture_output=True, env=two_threads),
            "two_processes_one_thread": lambda: subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "annsnn", *args, f"{tmp}/two.json"], check=True, capture_output=True, env=one_thread),
        }, repeats=3, warmup=False)  # whole commands: start-up is part of what is measured
        same = json.loads(Path(f"{tmp}/one.json").read_text())["rows"] == json.loads(Path(f"{tmp}/two.json").read_text())["rows"]
    one, two = t["one_process_two_threads"], t["two_processes_one_thread"]
    save("distributed", {"model": "shared ResNet-20 SNN (trained weights, default conversion), 512 CIFAR10-jpeg images, T=64, batch 32",
                         "one_process_two_threads_s": one, "two_processes_one_thread_s": two, "speedup": one / two, "identical_results": same,
                         "target": ">= 1.6", "note": "wall time of the whole command, start-up included; baseline 1 process x 2 threads on the same 2 cores"})


def sj_low_latency() -> None:
    import accuracy_vs_spikingjelly

    save("sj_low_latency", accuracy_vs_spikingjelly.spikingjelly_low_latency(SHARED))


def sj_heldout() -> None:
    import accuracy_vs_spikingjelly

    save("sj_heldout", accuracy_vs_spikingjelly.spikingjelly_heldout(SHARED))


def sj_full_test() -> None:
    import accuracy_vs_spikingjelly

    def progress(done: int, total: int) -> None:
        print(f"sj_full_test: batch {done}/{total}", file=sys.stderr, flush=True)

    save("sj_full_test", accuracy_vs_spikingjelly.spikingjelly_full_test(SHARED, progress=progress))


def accuracy() -> None:
    import accuracy_vs_spikingjelly

    save("accuracy", accuracy_vs_spikingjelly.main(SHARED))


def _nir_case(snn, images) -> dict:
    """Export to NIR and re-import, against one 'evaluate' pass (ANN + SNN, T=8) over ``images``."""
    import tempfile

    from annsnn.evaluation import analyze
    from annsnn.nir_io import export_nir, load_nir

    def evaluate():
        return analyze(snn, [images], [8], count=False)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.nir"

        def round_trip():
            export_nir(snn, path)
            return load_nir(path)

        t_nir = timed(round_trip, repeats=3)
        size = path.stat().st_size
    t_eval = timed(evaluate, repeats=3)
    return {"export_import_s": t_nir, "evaluate_T8_100_s": t_eval, "ratio": t_nir / t_eval, "nir_bytes": size}


def nir_roundtrip() -> None:
    from annsnn.convert import ConversionOptions
    from annsnn.data import load_dataset, make_loader
    from annsnn.errors import UsageError
    from annsnn.model_files import load_model
    from annsnn.nir_io import to_nir
    from annsnn.pipeline import ann_to_snn
    from annsnn.zoo import build, calibrate_batchnorm

    data = load_dataset(f"imagefolder:{SHARED / 'data' / 'CIFAR10-jpeg'}", "train")
    calib = next(iter(make_loader(data, 256, 256)))[0]
    images = next(iter(make_loader(load_dataset(f"imagefolder:{SHARED / 'data' / 'CIFAR10-jpeg'}", "test"), 100, 100)))[0]
    norm = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    resnet = load_model(str(SHARED / "models" / "cifar10-resnet" / "resnet20-12fca82f.th"), arch="resnet20").module
    r20, _ = ann_to_snn(resnet, [calib], input_shape=(3, 32, 32), options=ConversionOptions.plain(), normalization=norm)
    start = time.perf_counter()
    try:
        to_nir(r20)
        refused = None
    except UsageError as exc:
        refused = str(exc)
    refusal_s = time.perf_counter() - start
    vgg = build("vgg11_cifar")
    calibrate_batchnorm(vgg, calib)
    vgg_snn, _ = ann_to_snn(vgg, [calib], input_shape=(3, 32, 32), options=ConversionOptions.plain(), normalization=norm)
    save("nir", {
        "resnet20": {"refused": refused, "refusal_s": refusal_s, **({} if refused else _nir_case(r20, images))},
        "vgg11_cifar": {"params": sum(p.numel() for p in vgg_snn.graph.parameters()), **_nir_case(vgg_snn, images)},
        "resnet20_evaluate_T8_100_s": timed(lambda: _eval_only(r20, images), repeats=3),
    })


def _eval_only(snn, images):
    from annsnn.evaluation import analyze

    analyze(snn, [images], [8], count=False)


def robustness() -> None:
    """Issue 14: robustness over 21 FGSM ε at T=32 vs 21 evaluates at T=32 plus the attack's
    own gradient pass; every perturbed batch is simulated once for all T. ResNet-20 (shared)."""
    from annsnn.evaluation import analyze
    from annsnn.convert import ConversionOptions
    from annsnn.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset, make_loader
    from annsnn.model_files import load_model
    from annsnn.modes import parse_mode
    from annsnn.pipeline import ann_to_snn
    from annsnn.robustness import Robustness, RobustnessSpec, gradient_sign, parse_strengths

    images = int(os.environ.get("ROBUSTNESS_IMAGES", "100"))
    data = f"imagefolder:{SHARED / 'data' / 'CIFAR10-jpeg'}"
    net = load_model(SHARED / "models" / "cifar10-resnet" / "resnet20-12fca82f.th", "resnet20").module
    calib = (x for x, _ in make_loader(load_dataset(data, "train"), 128, 256))
    snn, _ = ann_to_snn(net, calib, input_shape=(3, 32, 32), options=ConversionOptions.plain(mode=parse_mode("99.99"), v_init=0.5), normalization=(list(IMAGENET_MEAN), list(IMAGENET_STD)))
    batches = list(make_loader(load_dataset(data, "test"), 50, images))
    eps = parse_strengths("0:1:0.05", "fgsm")

    def run_robustness(steps):
        study = Robustness(snn, RobustnessSpec(time_steps=steps, fgsm=eps))
        for i, (x, y) in enumerate(batches):
            study.run(x, y, batch_index=i)
        return study.report()

    def run_evaluate():
        return analyze(snn, batches, [32], count=False)

    def run_gradients():
        ann = Robustness(snn, RobustnessSpec(time_steps=(32,), fgsm=(0.0,))).ann
        for x, y in batches:
            gradient_sign(ann, x, y)

    run_evaluate()  # warm-up
    t_eval = timed(run_evaluate, repeats=1)
    t_grad = timed(run_gradients, repeats=1)
    start = time.perf_counter()
    run_robustness((32,))
    t_rob = time.perf_counter() - start
    budget = len(eps) * t_eval + t_grad
    save("robustness", {
        "images": images, "epsilons": len(eps), "T": 32,
        "evaluate_T32_s": t_eval, "ann_gradient_pass_s": t_grad, "robustness_T32_s": t_rob,
        "budget_s": budget, "ratio": t_rob / budget, "target_ratio": 1.5,
        "note": "budget = 21 x evaluate(T=32) + one FGSM gradient pass on the ANN; eps=0 is the clean batch and is simulated once",
    })


def _commit_of(result: dict) -> str:
    """A results file's commit (low_latency.json records one per architecture block)."""
    if "commit" in result:
        return result["commit"]
    inner = sorted({v["commit"] for v in result.values() if isinstance(v, dict) and "commit" in v})
    return "/".join(inner) if inner else "not recorded"


def row_commits(note: str) -> set[str]:
    """Every commit a row's notes name (``commit abc1234``, ``annsnn commit a, b``, ``x/y``)."""
    found: set[str] = set()
    for match in re.finditer(r"commit ((?:[0-9a-f]{7,}(?:\+dirty)?(?:, |/)?)+|not recorded|\?|unknown)", note):
        found |= {c for c in re.split(r", |/", match.group(1)) if c}
    return found


def summary() -> None:
    """Write benchmarks/RESULTS.md from whatever results/*.json exist (generated; do not edit)."""
    def load(name):
        path = RESULTS / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    rows = []
    if (r := load("speed")):
        rows += [
            ("SNN wall time / (T x ANN forward), VGG-11 CIFAR, random weights, AvgPool, batch 64, T=16", f"{r['annsnn_ratio_vs_T_ann']:.3f}", "<= 1.2",
             f"SpikingJelly 2.0 in the same run: single-step {r['spikingjelly_single_step_ratio_vs_T_ann']:.3f}, multi-step {r['spikingjelly_multi_step_ratio_vs_T_ann']:.3f}; interleaved, median of 5; commit {r.get('commit', '?')}", "speed"),
            ("T sweep {5,20,50} / one 50-step run", f"{r['sweep_ratio']:.3f}", "<= 1.05", "re-running per T would cost 1.5", "speed"),
            ("peak memory T=256 / T=16 (chunked)", f"{r['memory_ratio_T256_vs_T16']:.3f}", "<= 1.5", f"growth T=256 {r['peak_mb_T256']:.0f} MB, T=16 {r['peak_mb_T16']:.0f} MB", "speed"),
        ]
    if (r := load("speed_cuda")):
        for row in r["rows"]:
            rows.append((f"GPU simulate, VGG-11 random weights, B={row['batch']}, T={row['T']}: annsnn / SpikingJelly 2.0 multi-step", f"{row['annsnn_over_sj_best']:.3f}", "<= 0.8",
                         f"{r['gpu']}, torch {r['torch']}; annsnn / (T x ANN) {row['annsnn_over_T_ann']:.3f}, / ANN over [T*B] {row['annsnn_over_ann_merged']:.3f} (target <= 1.1 at B=256, T=16); commit {r.get('commit', '?')}", "speed --device cuda"))
    for device in ("cpu", "cuda"):
        if (r := load(f"imagenet_cost_{device}")):
            for row in r["rows"]:
                if "error" in row:
                    rows.append((f"{row['model']} 224^2 conversion ({device})", "error", "", row["error"], r["command"]))
                    continue
                speed = f"; simulate T=32: {row['simulate_T32_images_per_s']:.1f} images/s" if "simulate_T32_images_per_s" in row else ""
                rows.append((f"{row['model']} 224^2, default pipeline N=32, {row['images']} images ({device}{', ' + r['gpu'] if r.get('gpu') else ''}): time / ANN pass, memory / ANN pass",
                             f"{row['time_ratio']:.1f}x, {row['memory_ratio']:.2f}x", "<= 40x, <= 2x",
                             f"{row['conversion_s']:.1f} s vs {row['ann_pass_s']:.2f} s; {row['conversion_peak_mb']:.0f} vs {row['ann_peak_mb']:.0f} MB{speed}; commit {r.get('commit', '?')}", r["command"]))
    if (r := load("overhead")):
        rows.append(("analyzer: with counting / without, VGG-11 (random weights), T=16", f"{r['ratio']:.3f}", "<= 1.15", f"interleaved, median of 5; commit {r.get('commit', '?')}", "overhead"))
    if (r := load("calibration")):
        rows += [
            ("calibration peak memory / ANN inference peak, VGG19 224, batch 16", f"{r['memory_ratio']:.3f}", "<= 1.5", f"{r['calibration']['peak_mb']:.0f} vs {r['ann']['peak_mb']:.0f} MB", "calibration"),
            ("calibration time / ANN pass over the same batches", f"{r['time_ratio']:.3f}", "<= 2.5", f"{r['calibration']['seconds']:.1f} vs {r['ann']['seconds']:.1f} s", "calibration"),
        ]
    if (r := load("distributed")):
        rows.append(("torchrun 2 processes x 1 thread / 1 process x 2 threads speed-up", f"{r['speedup']:.2f}x", ">= 1.6x", f"identical results: {r['identical_results']}; commit {r.get('commit', '?')}", "distributed"))
    if (r := load("accuracy")):
        for name in ("default", "channel_wise_half"):
            block = r[name]
            text = ", ".join(f"T={t}: {100 * block['annsnn'][str(t)]:.1f} vs {100 * block['spikingjelly'][str(t)]:.1f}" for t in r["steps"])
            if "scales" in block and name == "default":  # channel-wise means are not comparable (dead channels)
                text += f"; scale ratio annsnn/SJ {block['scales']['annsnn_over_spikingjelly_min']:.3f}..{block['scales']['annsnn_over_spikingjelly_max']:.3f}"
            rows.append((f"ResNet-20 top-1, annsnn vs SpikingJelly ({name})", str(block["annsnn_at_least_spikingjelly_at_every_T"]), "annsnn >= SJ at every T", text, "accuracy"))
        if (c := r.get("calibrated")):
            ltb = c["spikingjelly_local_threshold_balancing"]
            text = ", ".join(f"T={t}: {100 * c['annsnn'][str(t)]:.1f} vs RC {100 * c['spikingjelly_rate_coding_best'][str(t)]:.1f} / LTB " + (f"{100 * ltb[str(t)]:.1f}" if isinstance(ltb, dict) else "failed") for t in c["steps"])
            rows.append((f"ResNet-20 top-1, annsnn {c['method']} (per N) vs SJ RateCoding best flags / LocalThresholdBalancing", str(c["annsnn_beats_both_at_every_T"]), "annsnn > both at every T", text, "accuracy"))
    if (r := load("low_latency")):  # issue 12: python benchmarks/low_latency.py
        targets = {8: 10.0, 16: 3.0, 32: 1.0, 64: 0.3}
        for arch, block in r.items():
            for key, row in sorted(block.get("rows", {}).items(), key=lambda kv: (kv[1]["method"], kv[1]["T"])):
                target = f"gap <= {targets[row['T']]}" if row["method"] == "threshold+step-bias" and row["T"] in targets else "–"
                rows.append((f"{arch} {row['method']} at T={row['T']}: gap to ANN (points)", f"{row['gap_points']:.1f}", target,
                             f"top-1 {100 * row['top1']:.1f} vs ANN {100 * block['ann_top1']:.1f}; {block['test_images']} test / {block['calibration_images']} calib images"
                             + (f"; held-out training images: top-1 {100 * row['heldout_top1']:.1f} vs ANN {100 * row['heldout_ann_top1']:.1f} ({row['heldout_images']} images)" if "heldout_top1" in row else "")
                             + f"; conversion {row['conversion_over_ann_pass']:.1f} ANN passes; commit {row.get('commit', block['commit'])}",
                             f"summary  # rows from: python benchmarks/low_latency.py --arch {arch} --calib {block['calibration_images']} --test {block['test_images']}"))
    if (r := load("calibration_cost")):  # issue 12
        for method, row in r["rows"].items():
            default = method == r["default"]
            label = method.replace("/", " --bias-samples ")
            rows.append((f"ResNet-20 conversion at N=32, --calibration {label}: time / one ANN pass over the 1,024 calibration images", f"{row['time_ratio']:.1f}", "<= 40" if default else "–",
                         f"{row['conversion_s']:.1f} s vs {row['ann_pass_s']:.2f} s, median of 3, interleaved" + (f"; median over {row['processes']} processes ({', '.join(f'{m:.1f}' for m in row['time_ratios'])})" if row.get('processes', 1) > 1 else "") + f"; commit {row.get('commit', r.get('commit', '?'))}", "calibration_cost"))
            rows.append((f"ResNet-20 conversion at N=32, --calibration {label}: peak memory / ANN pass (batch 128)", f"{row['memory_ratio']:.2f}", "<= 2" if default else "–",
                         f"{row['conversion_peak_mb']:.0f} vs {row['ann_peak_mb']:.0f} MB peak RSS growth" + (f", median of {row['processes']} processes ({', '.join(f'{m:.2f}' for m in row['memory_ratios'])})" if row.get('processes', 1) > 1 else "") + f"; commit {row.get('commit', r.get('commit', '?'))}", "calibration_cost"))
    if (r := load("sj_low_latency")) and (ll := load("low_latency")) and "resnet20" in ll:  # issue 12, side by side
        block = ll["resnet20"]
        default = "threshold+step-bias"
        ours = {row["T"]: row["top1"] for row in block.get("rows", {}).values() if row["method"] == default}
        same = block["calibration_images"] == r["calibration_images"] and block["test_images"] == r["test_images"]
        ltb = r["local_threshold_balancing"]
        cells, beats = [], True
        for t in r["steps"]:
            rc, lt = r["rate_coding_best"][str(t)], (ltb[str(t)] if isinstance(ltb, dict) else None)
            if t in ours:
                beats &= ours[t] > rc and (lt is None or ours[t] > lt)
            else:
                beats = False
            cells.append(f"T={t}: " + (f"{100 * ours[t]:.1f}" if t in ours else "not run") + f" vs RC {100 * rc:.1f} / LTB " + (f"{100 * lt:.1f}" if lt is not None else "failed"))
        rows.append(("ResNet-20 top-1, annsnn default (converted per N) vs SpikingJelly RateCoding best flags / LocalThresholdBalancing", str(beats and same), "annsnn > both at every T",
                     "; ".join(cells) + f"; same images: {same}; annsnn commit {block['commit']}, SpikingJelly run commit {r.get('commit', '?')}", "sj_low_latency  # annsnn side: python benchmarks/low_latency.py"))
    if (r := load("sj_heldout")) and (ll := load("low_latency")) and "resnet20" in ll:  # issue 12: T = 64 on held-out training images
        default = "threshold+step-bias"
        ours = {row["T"]: row for row in ll["resnet20"].get("rows", {}).values() if row["method"] == default and "heldout_top1" in row}
        same = all(ours[t]["heldout_images"] == r["heldout_images"] for t in ours)
        cells = [f"T={t}: " + (f"{100 * ours[t]['heldout_top1']:.1f}" if t in ours else "not run") + f" vs RC {100 * r['rate_coding_best_heldout'][str(t)]:.1f}" for t in r["steps"]]
        beats = all(t in ours and ours[t]["heldout_top1"] > r["rate_coding_best_heldout"][str(t)] for t in r["steps"])
        rows.append((f"ResNet-20 top-1 on {r['heldout_images']} held-out training images, annsnn default vs SpikingJelly RateCoding best flags", str(beats and same), "annsnn > RC at every T",
                     "; ".join(cells) + f"; ANN {100 * r['heldout_ann_top1']:.1f}; same images: {same}; annsnn commit {', '.join(sorted({row.get('commit', ll['resnet20']['commit']) for row in ours.values()}))}, SpikingJelly run commit {r.get('commit', '?')}", "sj_heldout  # annsnn side: python benchmarks/low_latency.py --heldout 1024"))
    if (r := load("sj_full_test")):  # issue 12: T = 64 on all 10,000 test images, paired
        for key, label in (("all_test_images", "all 10,000 test images"), ("issue_test_images", "the issue's 1,000 test images (every tenth)")):
            b, p = r[key], r[key]["paired"]
            lo, hi = p["difference_95ci_points"]
            rows.append((f"ResNet-20 top-1 at T={r['T']} on {label}, annsnn default (N={r['T']}) vs SpikingJelly RateCoding best flags",
                         f"{100 * b['annsnn_top1']:.2f} vs {100 * b['spikingjelly_rate_coding_best_top1']:.2f}", "annsnn > RC",
                         f"ANN {100 * b['ann_top1']:.2f}; paired: {p['annsnn_only']} images only annsnn gets right, {p['other_only']} only SJ; difference {p['difference_points']:+.2f} points, 95% CI [{lo:+.2f}, {hi:+.2f}], exact McNemar p = {p['mcnemar_p']:.3f}; same calibration images; commit {r.get('commit', '?')}",
                         "sj_full_test"))
    if (r := load("suite_low_latency")):  # issue 12
        for name, row in r["rows"].items():
            rows.append((f"{name}, default pipeline at T=64: gap to ANN (points)", f"{row['gap_points']:.2f}", "<= 0.5",
                         f"top-1 {100 * row['snn_top1']:.2f} vs ANN {100 * row['ann_top1']:.2f}; {r['test_images']} test / {r['calibration_images']} calib digits; commit {r.get('commit', '?')}", "suite_low_latency"))
    if (r := load("nir")):
        v = r["vgg11_cifar"]
        rows.append(("NIR export + re-import / one evaluate pass (T=8, 100 images), VGG-11 CIFAR", f"{v['ratio']:.3f}", "< 1", f"{v['export_import_s']:.2f} s vs {v['evaluate_T8_100_s']:.2f} s; ResNet-20 is refused ({r['resnet20']['refused']}) in {r['resnet20']['refusal_s']:.2f} s; its evaluate pass takes {r['resnet20_evaluate_T8_100_s']:.2f} s", "nir"))
    if (r := load("robustness")):
        rows.append((f"robustness, 21 FGSM eps at T=32 / (21 x evaluate T=32 + gradient pass), ResNet-20, {r['images']} images", f"{r['ratio']:.3f}", "<= 1.5",
                     f"{r['robustness_T32_s']:.1f} s vs {r['budget_s']:.1f} s", "robustness"))
    machine = next((load(n)["machine"] for n in ("speed", "overhead", "calibration", "accuracy", "distributed", "nir", "robustness") if load(n)), {})
    current = commit()
    fresh, older = [], []
    for a, b, c, d, e in rows:
        if "commit" not in d:  # the row's results file names the commit
            source = load(e.split()[0]) if e.split() and (RESULTS / f"{e.split()[0]}.json").exists() else None
            d += f"; commit {_commit_of(source) if source else 'not recorded'}"
        (fresh if row_commits(d) == {current} else older).append((a, b, c, d, e))
    lines = ["# Benchmark results\n\n", "Generated by `python benchmarks/run.py summary` from `benchmarks/results/*.json`; do not edit.\n",
             f"Machine: {machine}\n\n",
             f"## At code commit `{current}`\n\nEvery row below ran on the code of commit `{current}` (`benchmarks/provenance.py`: the last commit that changed the library, CLI, zoo or these scripts).\n\n",
             "| measure | result | target | notes | command |\n|---|---|---|---|---|\n"]
    lines += [f"| {a} | {b} | {c} | {d} | `{e if e.startswith('python ') else 'python benchmarks/run.py ' + e}` |\n" for a, b, c, d, e in fresh]
    if older:
        lines += [f"\n## Not re-run at `{current}`\n\nThese rows come from older code (each names its commit) and are kept as history, not as current figures: "
                  "their code has changed since, or the run is too long to repeat with every change. Rerun the command to refresh one.\n\n",
                  "| measure | result | target | notes | command |\n|---|---|---|---|---|\n"]
        lines += [f"| {a} | {b} | {c} | {d} | `{e if e.startswith('python ') else 'python benchmarks/run.py ' + e}` |\n" for a, b, c, d, e in older]
    (ROOT / "benchmarks" / "RESULTS.md").write_text("".join(lines))


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    jobs = {"speed": speed, "overhead": overhead, "calibration": calibration, "distributed": distributed, "accuracy": accuracy, "nir": nir_roundtrip, "robustness": robustness, "calibration_cost": calibration_cost, "sj_low_latency": sj_low_latency, "sj_heldout": sj_heldout, "sj_full_test": sj_full_test, "suite_low_latency": suite_low_latency, "nir_target": nir_target, "summary": lambda: None}
    args = sys.argv[1:]
    if "--device" in args:  # speed --device cuda: the GPU table (issue 24)
        where = args.index("--device")
        bench_device = args[where + 1]
        del args[where : where + 2]
        if bench_device != "cpu":
            jobs["speed"] = lambda: speed_gpu(bench_device)
    names = args or ["speed", "overhead", "calibration"]
    if names == ["all"]:
        names = list(jobs)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    for name in names:
        jobs[name]()
    summary()
