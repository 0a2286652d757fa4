"""The ``annsnn`` command: convert, evaluate and analyze ANN-to-SNN conversions.

Errors are one line on stderr: exit 2 for bad input, 1 for run-time failures.
``annsnn --debug COMMAND`` shows tracebacks.
"""
from __future__ import annotations

import csv
import io
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Iterable

import click
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from annsnn import __version__
from annsnn.errors import AnnsnnError, UsageError

from annsnn.calibration import CALIBRATIONS

from .params import FLOAT_LIST, MODE, SHAPE, TIME_STEPS

__all__ = ["cli", "main"]

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

DEFAULT_T = "5,20,50"
DEFAULT_CALIB_T = 32  # latency the default conversion is calibrated for (see README: low-latency calibration)
CALIBRATION_NAMES = tuple(CALIBRATIONS)  # the first is the default pipeline


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="annsnn")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Convert trained ANNs into spiking networks of integrate-and-fire neurons,
    and measure what the conversion costs in accuracy and saves in energy.

    \b
    Typical session:
      annsnn demo                               # the whole job on bundled digits data
      annsnn info model.pt --arch resnet20      # layers, MACs, convertible activations
      annsnn convert model.pt --arch resnet20 --mode 99.99 --data cifar10
      annsnn evaluate --T 8,32,128              # accuracy at every T, one simulation
      annsnn energy --T 5,20,50 --plot plots/   # ops, energy and break-even T

    The last conversion is remembered, so evaluate and energy need no path.
    """
    ctx.obj = {"debug": debug}


# ---------------------------------------------------------------------------
# shared resolution of models, data and normalization


def _load(model: str | None, arch: str | None, trust: bool, weights: str | None = None):
    from annsnn.io import LoadedModel, load_model
    from annsnn.zoo import architectures, build, embedded_checkpoint

    if model is None:
        return load_model(embedded_checkpoint())
    if model.startswith("zoo:"):
        name = model[4:]
        return LoadedModel(build(name, weights=weights).eval(), model, "zoo", arch=name)
    if weights is not None:
        raise UsageError("--weights applies to zoo:NAME models only")
    if arch is not None and arch not in architectures():
        raise UsageError(f"unknown --arch {arch!r}: run 'annsnn zoo list' to see the names")
    return load_model(model, arch, trust=trust)


def _resolve(loaded, data: str | None, mean: list[float] | None, std: list[float] | None, input_shape: tuple[int, ...] | None, data_root: str | None):
    from annsnn.data import dataset_spec
    from annsnn.zoo import architectures

    arch_spec = architectures().get(loaded.arch) if loaded.arch else None
    record = loaded.record
    name = data or record.get("dataset") or (arch_spec.dataset if arch_spec and arch_spec.dataset != "imagefolder" else None)
    if name is None:
        raise UsageError("which data? pass --data NAME (digits, mnist, cifar10, ..., imagefolder:PATH)")
    spec = dataset_spec(name, data_root)
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise UsageError("--mean and --std go together")
        norm = (mean, std)
        source = "--mean/--std"
    elif "normalization" in record:
        norm = (list(record["normalization"]["mean"]), list(record["normalization"]["std"]))
        source = "recorded in the model file"
    elif arch_spec is not None and arch_spec.normalization is not None:
        norm = (list(arch_spec.normalization[0]), list(arch_spec.normalization[1]))
        source = f"{arch_spec.name}'s training normalization"
    else:
        norm = (list(spec.mean), list(spec.std))
        source = f"{spec.name}'s standard normalization"
    shape = tuple(input_shape or record.get("input_shape") or spec.input_shape)
    if len(norm[0]) not in (1, shape[0]) or len(norm[1]) != len(norm[0]):
        raise UsageError(f"normalization has {len(norm[0])} values but the input has {shape[0]} channels")
    return spec, norm, source, shape


def _batches(loader, progress: Progress | None, description: str) -> Iterable:
    task = progress.add_task(description, total=len(loader), status="") if progress else None
    for x, y in loader:
        yield x, y
        if progress is not None and task is not None:
            progress.advance(task)


def _default_out(model: str | None, name: str) -> Path:
    if model is None or model.startswith("zoo:"):
        return Path(f"{name}.snn.pt")
    path = Path(model)
    return path.with_name(path.name.split(".")[0] + ".snn.pt")


# ---------------------------------------------------------------------------
# info


@cli.command()
@click.argument("model", required=False)
@click.option("--arch", help="Zoo architecture of a state_dict checkpoint (see 'annsnn zoo list').")
@click.option("--input-shape", type=SHAPE, help="Input shape C,H,W (default: recorded, or the dataset's).")
@click.option("--weights", help="For zoo:NAME ImageNet models: torchvision weights, e.g. DEFAULT (needs internet once).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the table as JSON.")
@click.option("--trust", is_flag=True, help="Allow unpickling a whole pickled nn.Module (runs code from the file).")
def info(model: str | None, arch: str | None, input_shape, weights: str | None, json_path: str | None, trust: bool) -> None:
    """Layers, output shapes, parameters and MACs of MODEL, and whether each activation converts.

    MODEL is a checkpoint (.pt/.pth/.th, with --arch for a bare state_dict), a TorchScript file,
    an .onnx file, or zoo:NAME for an untrained zoo architecture. Without MODEL: the bundled
    digits CNN. MACs come from fvcore (one fused multiply-add = one MAC); BatchNorm, pooling
    and other ops are listed apart and kept out of the MAC total.

    \b
    Examples:
      annsnn info zoo:vgg19 --input-shape 3,224,224
      annsnn info ../shared/models/cifar10-resnet/resnet20-12fca82f.th --arch resnet20
    """
    from annsnn.counting import count_ann
    from annsnn.files import check_output_path, write_json
    from annsnn.graph import classify_activation, trace
    from annsnn.zoo import architectures

    if json_path:
        check_output_path(json_path, inputs=(model or "",))
    loaded = _load(model, arch, trust, weights)
    arch_spec = architectures().get(loaded.arch) if loaded.arch else None
    shape = tuple(input_shape or loaded.record.get("input_shape") or (arch_spec.input_shape if arch_spec else ()))
    if not shape:
        raise UsageError("pass --input-shape C,H,W (this file records none)")
    counts = count_ann(loaded.module, shape)
    support: dict[str, str] = {}
    notes: list[str] = []
    try:
        traced = trace(loaded.module)
        modules = dict(traced.named_modules())
        functional = {"relu": 0, "analog": 0}
        for node in traced.graph.nodes:
            kind, ceiling = classify_activation(node, modules)
            label = "yes" if kind == "relu" else ("no: --hybrid keeps it analog" if kind == "analog" else "")
            if node.op == "call_module" and label:
                support[str(node.target)] = label + (f" (clip {ceiling:g})" if ceiling else "")
            elif label and kind in functional:
                functional[kind] += 1
        if functional["relu"]:
            notes.append(f"{functional['relu']} functional ReLU-like activation(s) in forward(): convertible")
        if functional["analog"]:
            notes.append(f"{functional['analog']} functional activation(s) that need --hybrid")
    except UsageError as exc:
        notes.append(f"not convertible as written: {exc}")
    from .render import info_table

    out.print(info_table(counts, support, f"{loaded.path} — input {'×'.join(map(str, shape))}"))
    conv = sum(l.macs for l in counts.layers if l.type.startswith("Conv"))
    lin = sum(l.macs for l in counts.layers if l.type == "Linear")
    out.print(f"conv+linear MACs: [bold]{counts.macs / 1e9:.4f} G[/] (conv {conv / 1e9:.4f} G, linear {lin / 1e9:.4f} G); parameters {counts.params:,}")
    for note in notes:
        out.print(f"note: {note}")
    if json_path:
        data = counts.to_dict()
        data.update({"model": loaded.path, "support": support, "notes": notes})
        write_json(json_path, data)
        out.print(f"wrote {json_path}")


# ---------------------------------------------------------------------------
# convert


@cli.command()
@click.argument("model", required=False)
@click.option("--arch", help="Zoo architecture of a state_dict checkpoint (see 'annsnn zoo list').")
@click.option("--mode", type=MODE, default="99.99", show_default=True, help="Scale per layer: 'max', a percentile (99.9, 99.99%), or a fraction of the max (0.5, 1/3).")
@click.option("--channel-wise/--layer-wise", "channel_wise", default=None, help="One scale per channel or per layer (default: per channel with a T-aware threshold search, else per layer).")
@click.option("--percentile-of", type=click.Choice(["all", "positive"]), default="all", show_default=True, help="Population of a percentile mode: all: every activation, zeros included (numpy/torch.quantile, SpikingJelly); positive: only the non-zero ones (snntoolbox), which gives higher scales.")
@click.option("--v-init", type=float, default=0.5, show_default=True, help="Initial membrane potential as a fraction of the threshold (0.5: the IF neuron rounds instead of flooring).")
@click.option("--T", "calib_T", type=click.IntRange(min=1), default=DEFAULT_CALIB_T, show_default=True, help="Latency N the SNN is calibrated for; valid for every T <= N (beyond N the last step's bias repeats).")
@click.option("--calibration", type=click.Choice(list(CALIBRATION_NAMES)), default=CALIBRATION_NAMES[0], show_default=True, help="threshold: per-channel thresholds minimising the IF quantisation error at T=N (Li et al. ICML 2021); bias: constant per-channel bias correction (Li et al. 2021); step-bias: a bias per step and channel (after FTBC, Wu et al. ECCV 2024); none: plain --mode normalization.")
@click.option("--bias-samples", type=click.IntRange(min=1), default=256, show_default=True, help="Calibration images (the first of --calib-samples) the bias passes simulate.")
@click.option("--maxpool", type=click.Choice(["spiking", "avg"]), default="spiking", show_default=True, help="spiking: a max-pool that spikes when the largest input spike count grows (output rate = max input rate); avg: replace MaxPool by AvgPool (changes the ANN).")
@click.option("--hybrid", is_flag=True, help="Keep unconvertible activations (GELU, SiLU, ...) analog instead of failing.")
@click.option("--data", help="Calibration dataset (default: recorded in the model, or the architecture's).")
@click.option("--data-root", type=click.Path(file_okay=False), help="Folder with local datasets (default $ANNSNN_DATA_ROOT or ./data).")
@click.option("--download", is_flag=True, help="Let torchvision download the dataset.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=1024, show_default=True, help="Training images used for calibration.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--mean", type=FLOAT_LIST, help="Input normalization mean, overriding the recorded one.")
@click.option("--std", type=FLOAT_LIST, help="Input normalization std, overriding the recorded one.")
@click.option("--input-shape", type=SHAPE, help="Input shape C,H,W.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="SNN file (default: next to MODEL, NAME.snn.pt).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the conversion report as JSON.")
@click.option("--trust", is_flag=True, help="Allow unpickling a whole pickled nn.Module (runs code from the file).")
def convert(model, arch, mode, channel_wise, percentile_of, v_init, calib_T, calibration, bias_samples, maxpool, hybrid, data, data_root, download, calib_samples, batch_size, mean, std, input_shape, out_path, json_path, trust) -> None:
    """Convert MODEL into a spiking network of IF neurons (reset by subtraction).

    BatchNorm is folded, one calibration pass records each activation's exact max and a
    histogram, the scale is read by --mode, and the scales are folded into the weights so
    that every threshold is 1 and neurons emit real 0/1 spikes. The SNN file loads without
    unpickling code. Without MODEL: the bundled digits CNN.

    \b
    Examples:
      annsnn convert model.pt --arch resnet20 --mode 99.99 --data imagefolder:../shared/data/CIFAR10-jpeg
      annsnn convert model.pt --arch vgg16_cifar --mode 1/3 --channel-wise --v-init 0.5
    """
    from annsnn.artifact import save_snn
    from annsnn.convert import ConversionOptions
    from annsnn.data import load_dataset, make_loader
    from annsnn.files import check_output_path, write_json
    from annsnn.pipeline import ann_to_snn
    from annsnn.workspace import remember_last_snn

    from .render import conversion_table

    options = _calibrated_options(mode, channel_wise, percentile_of, v_init, calib_T, calibration, bias_samples, maxpool, hybrid)
    loaded = _load(model, arch, trust)
    target = Path(out_path) if out_path else _default_out(model, loaded.arch or "model")
    check_output_path(target, inputs=(model or "",))
    if json_path:
        check_output_path(json_path, inputs=(model or "",))
    spec, norm, norm_source, shape = _resolve(loaded, data, mean, std, input_shape, data_root)
    loader = make_loader(load_dataset(spec.name, "train", data_root, download), batch_size, calib_samples)
    meta = {
        "source": {"path": str(Path(loaded.path).resolve()) if not loaded.path.startswith("zoo:") else loaded.path, "kind": loaded.kind, "arch": loaded.arch},
        "dataset": spec.to_dict(),
        "normalization": {"mean": norm[0], "std": norm[1], "source": norm_source},
        "annsnn_version": __version__,
    }
    started = time.perf_counter()
    with _progress() as progress:
        calib = (x for x, _ in _batches(loader, progress, "calibrating"))
        snn, report = ann_to_snn(loaded.module, calib, input_shape=shape, options=options, normalization=norm, meta=meta)
    save_snn(snn, target)
    remember_last_snn(target)
    out.print(conversion_table(report))
    if report.rescale_synapses:
        out.print(f"{len(report.rescale_synapses)} rescale synapse(s) on residual/shortcut paths (listed in --json)")
    if report.folded_batchnorm:
        out.print(f"folded {len(report.folded_batchnorm)} BatchNorm layer(s)")
    if options.maxpool == "avg":
        out.print("[yellow]note:[/] MaxPool was replaced by AvgPool: the converted network approximates a changed ANN")
    for note in report.notes:
        out.print(f"note: {note}")
    out.print(f"input normalization: {norm_source}; calibrated on {spec.name} in {time.perf_counter() - started:.1f} s")
    out.print(f"calibration: {calibration} for T={calib_T} (valid for every T <= {calib_T}; beyond it the last step's bias repeats)" if calibration != "none" else "calibration: none (plain normalization)")
    if options.threshold == "if-search":
        out.print(f"note: thresholds come from the IF error search at T={calib_T}; --mode/--percentile-of apply with --calibration none, bias or step-bias")
    out.print(f"wrote {target}  (remembered: 'annsnn evaluate' and 'annsnn energy' now use it)")
    if json_path:
        write_json(json_path, {"schema_version": 1, "snn": str(target), **meta, "report": report.to_dict()})
        out.print(f"wrote {json_path}")


def _calibrated_options(mode, channel_wise, percentile_of, v_init, calib_T, calibration, bias_samples, maxpool, hybrid):
    from annsnn.calibration import calibration_options
    from annsnn.convert import ConversionOptions

    threshold, bias = calibration_options(calibration)
    if channel_wise is None:
        channel_wise = threshold == "if-search"
    calibrated = calibration != "none"
    return ConversionOptions(mode=mode, channel_wise=channel_wise, percentile_of=percentile_of, v_init=v_init, maxpool=maxpool, hybrid=hybrid,
                             T=calib_T if calibrated else None, threshold=threshold, bias=bias, bias_samples=bias_samples)


# ---------------------------------------------------------------------------
# evaluate and energy


def _snn_and_data(snn_path, data, data_root, download, split, samples, batch_size):
    from annsnn.artifact import load_snn
    from annsnn.data import load_dataset, make_loader
    from annsnn.workspace import last_snn

    path = Path(snn_path) if snn_path else last_snn()
    snn = load_snn(path)
    name = data or snn.meta.get("dataset", {}).get("name")
    if not name:
        raise UsageError("the SNN records no dataset; pass --data NAME")
    loader = make_loader(load_dataset(name, split, data_root, download), batch_size, samples)
    return path, snn, name, loader


def _analyze(snn, loader, T, encoding, seed, chunk, models, count: bool, progress_path: Path | None = None, resume: bool = False, device: str = "cpu"):
    """One evaluation path. Progress is saved after every batch when ``progress_path`` is set;
    ``resume`` continues from it. Under torchrun, each rank loads and runs only its shard of the batches."""
    from annsnn.analyzer import Analyzer
    from annsnn.data import select_batches
    from annsnn.distributed import gather_objects, init_from_env, shard_batches
    from annsnn.files import atomic_path

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    rank, size = init_from_env(device)
    if size > 1 and device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    if size > 1 and resume:
        raise UsageError("--resume works in a single process; rerun without torchrun or without --resume")
    signature = {"snn": str(snn.meta.get("source", {})), "T": list(T), "encoding": encoding, "seed": seed, "models": [str(m) for m in models], "count": count, "batches": len(loader), "samples": len(loader.dataset)}
    with Analyzer(snn, T, encoding=encoding, seed=seed, energy_models=models, count=count, chunk=chunk, device=device) as analyzer:
        if resume and progress_path is not None and progress_path.is_file():
            saved = torch.load(str(progress_path), weights_only=True)
            if saved.get("signature") != signature:
                raise UsageError(f"{progress_path} belongs to a different run; delete it or drop --resume")
            analyzer.load_state_dict(saved["state"])
            err.print(f"resuming: {len(analyzer.done_batches())} of {len(loader)} batches already done")
        done = analyzer.done_batches()
        mine = [index for index in shard_batches(len(loader), rank, size) if index not in done]
        with _progress() as progress:
            for index, (x, y) in zip(mine, _batches(select_batches(loader, mine), progress if rank == 0 else None, f"simulating T≤{max(T)}")):
                if tuple(x.shape[1:]) != tuple(snn.meta["input_shape"]):
                    raise UsageError(f"the data has shape {tuple(x.shape[1:])}, the SNN expects {tuple(snn.meta['input_shape'])}")
                analyzer.run(x, y, batch_index=index)
                if progress_path is not None and size == 1:
                    with atomic_path(progress_path) as tmp:
                        torch.save({"signature": signature, "state": analyzer.state_dict()}, str(tmp))
        if size > 1:
            states = gather_objects(analyzer.state_dict())
            merged = Analyzer(snn.cpu(), T, encoding=encoding, seed=seed, energy_models=models, count=count, chunk=chunk)
            for state in states:
                merged.load_state_dict(state)  # type: ignore[arg-type]
            analyzer = merged
        result = analyzer.report()
    if progress_path is not None and progress_path.is_file():
        progress_path.unlink()
    return result, rank


def _progress_path(json_path: str | None, command: str, snn_path: Path) -> Path:
    base = Path(json_path) if json_path else snn_path.with_name(snn_path.name + f".{command}")
    return base.with_name(base.name + ".progress.pt")


_data_options = [
    click.option("--data", help="Dataset (default: the one the SNN was calibrated on)."),
    click.option("--data-root", type=click.Path(file_okay=False), help="Folder with local datasets (default $ANNSNN_DATA_ROOT or ./data)."),
    click.option("--download", is_flag=True, help="Let torchvision download the dataset."),
    click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True),
    click.option("--samples", type=click.IntRange(min=1), help="Use the first N samples (default: all)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
    click.option("--encoding", type=click.Choice(["direct", "poisson"]), default="direct", show_default=True, help="direct: the image every step; poisson: Bernoulli spikes with rate = pixel value."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Poisson encoder."),
    click.option("--chunk", type=click.IntRange(min=1), help="Time steps simulated at once (default: automatic, bounded memory)."),
    click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N (a GPU is optional)."),
]


def _with_data_options(fn):
    for option in reversed(_data_options):
        fn = option(fn)
    return fn


@cli.command()
@click.argument("snn", required=False)
@click.option("--T", "T", type=TIME_STEPS, default=DEFAULT_T, show_default=True, help="Time steps to read out, e.g. 5,20,50 (one simulation of max(T)).")
@_with_data_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results (schema_version 1; accuracies as fractions).")
@click.option("--resume", is_flag=True, help="Continue a killed run from its progress file (saved after every batch).")
def evaluate(snn, T, data, data_root, download, split, samples, batch_size, encoding, seed, chunk, device, json_path, resume) -> None:
    """Accuracy of SNN at every requested T, beside its ANN on the same samples.

    One simulation of max(T) steps reads out every T (prefix sums, not re-runs), and the ANN
    is scored on exactly the same tensors. Without SNN: the last conversion.
    """
    from annsnn.files import check_output_path, write_json

    from .render import evaluation_table

    if json_path:
        check_output_path(json_path, inputs=(snn or "",))
    path, network, name, loader = _snn_and_data(snn, data, data_root, download, split, samples, batch_size)
    result, rank = _analyze(network, loader, T, encoding, seed, chunk, ("45nm-fp32",), count=False, progress_path=_progress_path(json_path, "evaluate", path), resume=resume, device=device)
    if rank != 0:
        return
    out.print(evaluation_table(result))
    if json_path:
        data_out = _evaluation_json(result, path, name, split)
        write_json(json_path, data_out)
        out.print(f"wrote {json_path}")


def _evaluation_json(result, path, dataset, split) -> dict:
    return {
        "schema_version": 1,
        "snn": str(path),
        "dataset": dataset,
        "split": split,
        "samples": result.samples,
        "encoding": result.encoding,
        "seed": result.seed,
        "ann": {"top1": result.ann.top1, "recall_macro": result.ann.recall_macro, "f1_macro": result.ann.f1_macro},
        "rows": [
            {"T": r.T, "top1": r.top1, "gap": r.gap, "agreement": r.agreement, "recall_macro": r.recall_macro, "f1_macro": r.f1_macro, "firing_rate": r.firing_rate}
            for r in result.rows
        ],
        "firing_rates": result.firing_rates,
    }


@cli.command()
@click.argument("snn", required=False)
@click.option("--T", "T", type=TIME_STEPS, default=DEFAULT_T, show_default=True, help="Time steps to report, e.g. 5,20,50.")
@click.option("--energy-model", "energy_models", multiple=True, help="Preset name, NAME+sram (compute plus SRAM traffic, Lemaire et al. 2022), or a JSON/TOML file; repeat for several (default 45nm-fp32, 45nm-fp32+sram, loihi). See 'annsnn energy-models'.")
@_with_data_options
@click.option("--ann", "ann_model", help="Analyze an ANN alone: MACs and energy only.")
@click.option("--arch", help="With --ann: zoo architecture of a state_dict checkpoint.")
@click.option("--input-shape", type=SHAPE, help="With --ann: input shape C,H,W.")
@click.option("--per-layer", is_flag=True, help="Also show firing rate, ACs and energy share per layer.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write everything (schema_version 1).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the trade-off table as CSV.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the trade-off table as Markdown.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), help="Write PNG plots into this folder.")
@click.option("--resume", is_flag=True, help="Continue a killed run from its progress file (saved after every batch).")
def energy(snn, T, energy_models, data, data_root, download, split, samples, batch_size, encoding, seed, chunk, device, ann_model, arch, input_shape, per_layer, json_path, csv_path, md_path, plot_dir, resume) -> None:
    """Operations and energy per inference of SNN at every T, against its ANN.

    Counts come from the real spikes of one simulation: synaptic ACs (SyOPs) are the exact
    fan-out of every spike (borders and padding included), first-layer MACs are counted once
    for direct input, each neuron costs one update per step. Energy = counts × the per-op
    constants of each named, cited model. Break-even T is the largest T at which the SNN
    is still cheaper than the ANN. Without SNN: the last conversion.
    """
    from annsnn.energy import get_energy_model
    from annsnn.files import check_output_path, write_json, write_text

    from .render import energy_table, layer_table

    names = energy_models or ("45nm-fp32", "45nm-fp32+sram", "loihi")
    for name in names:
        get_energy_model(name[: -len("+sram")] if name.endswith("+sram") else name)  # validate early
    models = [name if name.endswith("+sram") else get_energy_model(name) for name in names]
    for path in (json_path, csv_path, md_path):
        if path:
            check_output_path(path, inputs=(snn or "", ann_model or ""))
    if ann_model:
        _energy_ann_only(ann_model, arch, input_shape, [m for m in models if not isinstance(m, str)], json_path)
        return
    path, network, name, loader = _snn_and_data(snn, data, data_root, download, split, samples, batch_size)
    result, rank = _analyze(network, loader, T, encoding, seed, chunk, models, count=True, progress_path=_progress_path(json_path, "energy", path), resume=resume, device=device)
    if rank != 0:
        return
    out.print(energy_table(result))
    breaks = ", ".join(f"{k}: {'never cheaper' if v is None else v}" for k, v in result.break_even_T.items())
    out.print(f"break-even T (largest T with SNN energy below the ANN's): {breaks}")
    for note in result.notes:
        out.print(f"note: {note}")
    if result.unsupported:
        err.print(f"[yellow]warning:[/] not counted (unsupported layers): {', '.join(result.unsupported)}")
    if per_layer:
        out.print(layer_table(result))
    data_out = result.to_dict()
    data_out.update({"snn": str(path), "dataset": name, "split": split})
    if json_path:
        write_json(json_path, data_out)
        out.print(f"wrote {json_path}")
    if csv_path:
        write_text(csv_path, _csv(result))
        out.print(f"wrote {csv_path}")
    if md_path:
        write_text(md_path, _markdown(result))
        out.print(f"wrote {md_path}")
    if plot_dir:
        from annsnn.plots import save_plots

        for written in save_plots(result, plot_dir):
            out.print(f"wrote {written}")


def _energy_ann_only(model, arch, input_shape, models, json_path) -> None:
    from annsnn.counting import count_ann
    from annsnn.energy import get_energy_model
    from annsnn.files import write_json
    from annsnn.zoo import architectures

    from .render import energy_str, si

    loaded = _load(model, arch, False)
    spec = architectures().get(loaded.arch) if loaded.arch else None
    shape = tuple(input_shape or loaded.record.get("input_shape") or (spec.input_shape if spec else ()))
    if not shape:
        raise UsageError("pass --input-shape C,H,W")
    counts = count_ann(loaded.module, shape)
    energies = {}
    for m in models:
        ref = m if m.kind == "digital" else get_energy_model(m.ann_reference)
        energies[m.name] = ref.ann_energy_pj(counts.macs, counts.bias_adds)
        out.print(f"{m.name}: {energy_str(energies[m.name])} per inference" + ("" if m.kind == "digital" else f" (ANN under {m.ann_reference})"))
    out.print(f"MACs {si(counts.macs)}, bias adds {si(counts.bias_adds)}")
    if json_path:
        write_json(json_path, {"schema_version": 1, "ann": {"macs": counts.macs, "bias_adds": counts.bias_adds, "energy_pj": energies}, "energy_models": {m.name: m.to_dict() for m in models}})
        out.print(f"wrote {json_path}")


def _csv(result) -> str:
    buffer = io.StringIO()
    names = list(result.energy_models)
    writer = csv.writer(buffer)
    writer.writerow(["T", "top1", "gap", "agreement", "synaptic_acs", "macs", "bias_acs", "neuron_updates", "total_ops"] + [f"energy_pj_{n}" for n in names] + [f"energy_ratio_{n}" for n in names])
    writer.writerow(["ANN", result.ann.top1, "", 1.0, 0, result.ann.macs, result.ann.bias_adds, 0, result.ann.macs + result.ann.bias_adds] + [result.ann.energy_pj[n] for n in names] + [1.0 for _ in names])
    for r in result.rows:
        writer.writerow([r.T, r.top1, r.gap, r.agreement, r.synaptic_acs, r.macs, r.bias_acs, r.neuron_updates, r.total_ops] + [r.energy_pj[n] for n in names] + [r.energy_ratio[n] for n in names])
    return buffer.getvalue()


def _markdown(result) -> str:
    from .render import energy_str, pct, si

    names = list(result.energy_models)
    head = ["T", "top-1 %", "gap", "SyOPs", "MACs", "total ops"] + [f"E {n}" for n in names] + [f"SNN/ANN {n}" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ann = result.ann
    lines.append("| ANN | " + " | ".join([pct(ann.top1), "", "–", si(ann.macs), si(ann.macs + ann.bias_adds)] + [energy_str(ann.energy_pj[n]) for n in names] + ["1" for _ in names]) + " |")
    for r in result.rows:
        lines.append("| " + " | ".join([str(r.T), pct(r.top1), pct(r.gap, True), si(r.synaptic_acs), si(r.macs), si(r.total_ops)] + [energy_str(r.energy_pj[n]) for n in names] + [f"{r.energy_ratio[n]:.3f}" if r.energy_ratio[n] is not None else "–" for n in names]) + " |")
    lines.append("")
    lines.append("Break-even T: " + ", ".join(f"{k} {v}" for k, v in result.break_even_T.items()))
    return "\n".join(lines) + "\n"


@cli.command("energy-models")
def energy_models_cmd() -> None:
    """List the energy-model presets with their constants and sources."""
    from rich.table import Table

    from annsnn.energy import PRESETS

    table = Table(title="Energy models (pJ per operation)", title_justify="left")
    for col in ("name", "kind", "E_MAC", "E_AC / synop", "E_neuron", "source"):
        table.add_column(col, overflow="fold")
    for m in PRESETS:
        table.add_row(m.name, m.kind, f"{m.e_mac_pj:g}", f"{m.e_ac_pj:g}", f"{m.e_neuron_pj:g}", m.citation + ("" if m.verified else " [UNVERIFIED]"))
    out.print(table)
    out.print("memory-aware: NAME+sram adds SRAM accesses (weights, inputs, potentials; cost by memory size) to a digital model")
    out.print('custom: a JSON/TOML file {"name", "e_mac_pj", "e_ac_pj", "e_neuron_pj", "citation"[, "kind"]} passed to --energy-model')


# ---------------------------------------------------------------------------
# demo


@cli.command()
@click.option("--out-dir", type=click.Path(file_okay=False), default=".", show_default=True, help="Where the SNN, JSON and plots go.")
@click.option("--T", "T", type=TIME_STEPS, default=DEFAULT_T, show_default=True)
def demo(out_dir: str, T) -> None:
    """The whole job on the bundled digits CNN, no download: convert (99.99), then the
    accuracy–energy trade-off at T = 5, 20, 50 with plots."""
    from annsnn.artifact import save_snn
    from annsnn.convert import ConversionOptions
    from annsnn.data import load_dataset, make_loader
    from annsnn.files import write_json
    from annsnn.io import load_model
    from annsnn.modes import parse_mode
    from annsnn.pipeline import ann_to_snn
    from annsnn.plots import save_plots
    from annsnn.workspace import remember_last_snn
    from annsnn.zoo import embedded_checkpoint

    from .render import conversion_table, energy_table

    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    from annsnn.files import check_output_path

    check_output_path(directory / "digits_cnn.snn.pt")
    loaded = load_model(embedded_checkpoint())
    spec, norm, norm_source, shape = _resolve(loaded, None, None, None, None, None)
    steps = sorted(T) if not isinstance(T, int) else [T]
    plain_options = ConversionOptions(mode=parse_mode("99.99"))
    options = _calibrated_options(parse_mode("99.99"), None, "all", 0.5, max(steps), CALIBRATION_NAMES[0], 256, "spiking", False)
    started = time.perf_counter()
    meta = {"source": {"path": str(embedded_checkpoint()), "kind": "checkpoint", "arch": loaded.arch}, "dataset": spec.to_dict(),
            "normalization": {"mean": norm[0], "std": norm[1], "source": norm_source}, "annsnn_version": __version__}
    with _progress() as progress:
        images = [x for x, _ in _batches(make_loader(load_dataset("digits", "train"), 256), progress, "calibrating")]
    plain, _ = ann_to_snn(loaded.module, iter(images), input_shape=shape, options=plain_options, normalization=norm, meta=meta)
    snn, report = ann_to_snn(loaded.module, iter(images), input_shape=shape, options=options, normalization=norm, meta=meta)
    target = directory / "digits_cnn.snn.pt"
    save_snn(snn, target)
    remember_last_snn(target)
    out.print(conversion_table(report))
    test_loader = make_loader(load_dataset("digits", "test"), 360)
    plain_result, _ = _analyze(plain, test_loader, T, "direct", 0, None, ("45nm-fp32",), count=False)
    out.print("plain normalization (--calibration none --v-init 0): top-1 " + ", ".join(f"T={row.T}: {100 * (row.top1 or 0.0):.1f}%" for row in plain_result.rows))
    out.print(f"calibrated ({CALIBRATION_NAMES[0]}, calibrated for T={max(steps)}, valid for every T <= {max(steps)}):")
    result, _ = _analyze(snn, test_loader, T, "direct", 0, None, ("45nm-fp32", "45nm-fp32+sram", "loihi"), count=True)
    out.print(energy_table(result))
    out.print("break-even T: " + ", ".join(f"{k}: {v}" for k, v in result.break_even_T.items()))
    data_out = result.to_dict()
    data_out.update({"snn": str(target), "dataset": "digits", "split": "test", "conversion": report.to_dict(),
                     "plain_top1": {str(row.T): row.top1 for row in plain_result.rows}})
    write_json(directory / "demo.json", data_out)
    plots = save_plots(result, directory / "plots")
    out.print(f"wrote {target}, {directory / 'demo.json'} and plots: " + ", ".join(str(p) for p in plots))
    out.print(f"done in {time.perf_counter() - started:.1f} s; next: 'annsnn evaluate' or 'annsnn energy --T 5,20,50' reuse this SNN")


# ---------------------------------------------------------------------------
# zoo


@cli.group()
def zoo() -> None:
    """Architectures by name, and training them."""


@zoo.command("list")
@click.option("--macs/--no-macs", default=True, show_default=True, help="Count MACs (slower for ImageNet models).")
def zoo_list(macs: bool) -> None:
    """Show every architecture with its input, parameters and MACs."""
    from rich.table import Table

    from annsnn.counting import count_ann
    from annsnn.zoo import architectures, build

    table = Table(title="annsnn model zoo", title_justify="left")
    for col in ("name", "input", "dataset", "params", "MACs", "description"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    from .render import si

    for spec in architectures().values():
        model = build(spec.name)
        params = sum(p.numel() for p in model.parameters())
        count = si(count_ann(model, spec.input_shape).macs) if macs else ""
        table.add_row(spec.name, "×".join(map(str, spec.input_shape)), spec.dataset, f"{params:,}", count, spec.description)
    out.print(table)


@zoo.command("train")
@click.argument("arch")
@click.option("--data", default="digits", show_default=True, help="Dataset name.")
@click.option("--data-root", type=click.Path(file_okay=False))
@click.option("--download", is_flag=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--samples", type=click.IntRange(min=1), help="Train on the first N training samples only.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Checkpoint file (default ARCH-DATA.pt).")
def zoo_train(arch, data, data_root, download, epochs, lr, batch_size, optimizer, seed, samples, out_path) -> None:
    """Train ARCH on a dataset; the checkpoint records arch, dataset and normalization,
    so 'annsnn convert FILE' needs no other flag."""
    from annsnn.files import atomic_path, check_output_path
    from annsnn.zoo.train import TrainConfig, checkpoint_dict, train

    target = Path(out_path or f"{arch}-{data.replace(':', '_').replace('/', '_')}.pt")
    check_output_path(target)
    torch.use_deterministic_algorithms(True, warn_only=True)
    config = TrainConfig(arch=arch, dataset=data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, optimizer=optimizer, data_root=data_root, download=download, train_samples=samples)
    with _progress() as progress:
        task = progress.add_task(f"training {arch}", total=None, status="")

        def on_step(step: int, total: int, loss: float, acc: float) -> None:
            progress.update(task, completed=step, total=total, status=f"loss {loss:.4f} acc {100 * acc:.2f}%")

        result = train(config, on_step)
    with atomic_path(target) as tmp:
        torch.save(checkpoint_dict(config, result), str(tmp))
    for row in result.history:
        out.print(f"epoch {row['epoch']}: loss {row['loss']:.4f}  train {100 * row['train_top1']:.2f}%  test {100 * row['test_top1']:.2f}%")
    out.print(f"wrote {target} (test top-1 {100 * result.test_top1:.2f}%)")


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors, exit 2 for usage errors and 1 for failures."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    if not debug:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        cli.main(args=args, prog_name="annsnn", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        if debug:
            raise
        message = exc.format_message().replace("\n", " ")
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except AnnsnnError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last resort, one line
        if debug:
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: internal error ({type(exc).__name__}: {text}); rerun with --debug for details", file=sys.stderr)
        sys.exit(1)
