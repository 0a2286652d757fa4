"""The ``annsnn`` command: convert, evaluate and analyze ANN-to-SNN conversions.

Errors are one line on stderr: exit 2 for bad input, 1 for run-time failures.
``annsnn --debug COMMAND`` shows tracebacks.
"""
from __future__ import annotations

import dataclasses
import errno
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

from annsnn.calibration import CALIBRATIONS, DELAY_CRITERIA, READOUTS
from annsnn.conversion_options import PIPELINE_THRESHOLD_SCALE
from annsnn.modes import MAX_TIME_STEPS

from .params import FLOAT_LIST, MODE, READOUT_DELAY, SHAPE, TIME_STEPS, FiniteFloat, NonEmptyPath

__all__ = ["cli", "main"]

# markup off: a file name or message with [brackets] is printed as it is (rich would read
# '[red]' as a style and drop it, so 'wrote e[bold].json' named a file that does not exist)
out = Console(markup=False)  # a terminal: its width; piped: $COLUMNS, else 80 (rich)
err = Console(stderr=True, markup=False)
MAX_SPIKES = 64  # --max-spikes: the threshold search holds T x K levels per channel

DEFAULT_T = "5,20,50"
DEFAULT_CALIB_T = 32  # latency the default conversion is calibrated for (see README: low-latency calibration)
CALIBRATION_NAMES = tuple(CALIBRATIONS)  # the first is the default pipeline


class _Bars(Progress):
    """Progress bars on stderr that vanish when the block fails: the error is then the
    only line (a finished run keeps its final bars)."""

    _failed = False

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        if exc_type is not None:
            self._failed = True
            self.live.transient = True
            for task in list(self.task_ids):
                self.remove_task(task)
        super().__exit__(exc_type, exc_val, exc_tb)

    def stop(self) -> None:
        if self._failed:  # rich's stop ends a non-terminal console's bars with a blank line: none before the error
            self.live.stop()
            return
        super().stop()


def _progress() -> Progress:
    return _Bars(
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
    Examples (a typical session):
      annsnn demo                          # the whole job on bundled digits data
      annsnn info model.pt --arch resnet20 # layers, MACs, convertible activations
      annsnn convert model.pt --arch resnet20 --data cifar10   # for T=32
      annsnn evaluate --T 8,16,32          # accuracy at every T, one simulation
      annsnn energy --T 8,16,32 --plot plots/   # ops, energy and break-even T

    The last conversion made in a directory is remembered there, so evaluate and energy
    run from that directory need no path; every result names the SNN file it used.
    """
    ctx.obj = {"debug": debug}


# ---------------------------------------------------------------------------
# progress


def _batches(loader, progress: Progress | None, description: str) -> Iterable:
    """The loader's batches; the bar counts images, so a one-batch run still moves."""
    task = progress.add_task(f"{description} (images)", total=len(loader.dataset), status="") if progress else None
    for x, y in loader:
        yield x, y
        if progress is not None and task is not None:
            progress.advance(task, int(x.shape[0]))


# ---------------------------------------------------------------------------
# info


@cli.command()
@click.argument("model", required=False)
@click.option("--arch", help="Architecture of a state_dict (.pt/.safetensors): a zoo name ('annsnn zoo list'), torchvision:NAME or timm:NAME (classes read from the checkpoint).")
@click.option("--input-shape", type=SHAPE, help="Input shape C,H,W (default: recorded, or the dataset's).")
@click.option("--weights", help="For zoo:NAME ImageNet models: torchvision weights, e.g. DEFAULT (needs internet once).")
@click.option("--json", "json_path", type=NonEmptyPath(dir_okay=False), help="Also write the table as JSON.")
@click.option("--trust", is_flag=True, help="Allow unpickling a whole pickled nn.Module (runs code from the file).")
def info(model: str | None, arch: str | None, input_shape, weights: str | None, json_path: str | None, trust: bool) -> None:
    """Layers, output shapes, parameters and MACs of MODEL, and whether each activation converts.

    MODEL is a checkpoint (.pt/.pth/.th, with --arch for a bare state_dict), a .safetensors
    state_dict (with --arch), a TorchScript file (traced or scripted; needs --input-shape), a
    torch.export .pt2 file, an .onnx file, or zoo:NAME for an untrained zoo architecture.
    --arch also takes torchvision:NAME and timm:NAME. Without MODEL: the bundled
    digits CNN. MACs come from fvcore (one fused multiply-add = one MAC); BatchNorm, pooling
    and other ops are listed apart and kept out of the MAC total.

    \b
    Examples:
      annsnn info zoo:vgg19 --input-shape 3,224,224
      annsnn info resnet20-12fca82f.th --arch resnet20
      annsnn info model.pt2              # torch.export.save: shape recorded
      annsnn info traced.pt --input-shape 3,32,32   # torch.jit.trace / script
      annsnn info finetuned.safetensors --arch timm:resnet18
    """
    from annsnn.counting import count_ann
    from annsnn.files import check_output_path, write_json
    from annsnn.model_files import convertible_module
    from annsnn.memory_estimate import check_fits
    from annsnn.sources import activation_support, load_source, model_input_shape

    if json_path:
        check_output_path(json_path, inputs=(model or "",))
    loaded = load_source(model, arch, trust, weights, input_shape)
    shape = model_input_shape(loaded, input_shape)
    convertible_module(loaded, shape)
    check_fits(loaded.module, shape, 1)
    counts = count_ann(loaded.module, shape)
    from annsnn.ops import default_registry

    support = activation_support(loaded.module, default_registry())
    notes = support.notes()
    from .render import info_table, mac_summary

    out.print(info_table(counts, support.modules, f"{loaded.path} — input {'×'.join(map(str, shape))}"))
    out.print(mac_summary(counts))
    if counts.unsupported:
        out.print("note: ops without a count: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.unsupported.items())))
    for note in notes:
        out.print(f"note: {note}")
    if json_path:
        data = counts.to_dict()
        data.update({"model": loaded.path, "support": support.modules, "notes": notes})
        write_json(json_path, data)
        out.print(f"wrote {json_path}")


# ---------------------------------------------------------------------------
# convert


@cli.command()
@click.argument("model", required=False)
@click.option("--arch", help="Architecture of a state_dict (.pt/.safetensors): a zoo name ('annsnn zoo list'), torchvision:NAME or timm:NAME (classes read from the checkpoint).")
@click.option("--mode", type=MODE, default=None, help="Set each layer's threshold from its activations instead of the T-aware search: 'max', a percentile (99.9, 99.99%), or a fraction of the max (0.5, 1/3); the per-step bias is still fitted on top (--calibration step-bias). A bare number above 1 is a percentile, one up to 1 a fraction: --mode 50 is the 50th percentile, --mode 0.5 is half the max (write 0.5% for the 0.5th percentile). Default: the T-aware search; 99.99 with --calibration none, bias or step-bias.")
@click.option("--channel-wise/--layer-wise", "channel_wise", default=None, help="One scale per channel or per layer (default: per channel with a T-aware threshold search, else per layer).")
@click.option("--percentile-of", type=click.Choice(["all", "positive"]), default=None, help="Population of a percentile --mode: all (default): every activation, zeros included (numpy/torch.quantile, SpikingJelly); positive: only the non-zero ones (snntoolbox), which gives higher scales.")
@click.option("--v-init", type=float, default=0.5, show_default=True, help="Initial membrane potential as a fraction of the threshold (0.5: the IF neuron rounds instead of flooring).")
@click.option("--T", "calib_T", type=click.IntRange(min=1, max=MAX_TIME_STEPS), default=DEFAULT_CALIB_T, show_default=True, help="Latency N the SNN is calibrated for; valid for every T <= N (beyond N the last step's bias repeats). Not with --calibration none, which fits no latency.")
@click.option("--calibration", type=click.Choice(list(CALIBRATION_NAMES)), default=None, metavar="METHOD", help=f"One of {', '.join(CALIBRATION_NAMES)}. threshold: per-channel thresholds minimising the IF quantisation error at T=N (Li et al. ICML 2021); bias: constant per-channel bias correction (Li et al. 2021); step-bias: a bias per step and channel (after FTBC, Wu et al. ECCV 2024); none: plain --mode normalization. Default: {CALIBRATION_NAMES[0]}, or step-bias with an explicit --mode.")
@click.option("--bias-samples", type=click.IntRange(min=1), default=None, help="Calibration images (the first of --calib-samples) the bias passes simulate. Default 256; at --T 8 or less with the default calibration, binary spikes and --readout-delay auto, the images the readout-delay choice does not read: 768 of 1,024 (at most 768, at least 256), measured better on held-out training images.")
@click.option("--threshold-scale", type=click.FloatRange(min=0.0, max=4.0, min_open=True), default=None, help=f"Multiply the IF-search thresholds by this factor (default {PIPELINE_THRESHOLD_SCALE:g}, measured on held-out training images; 1 is the error-search optimum itself).")
@click.option("--step-solver", type=click.Choice(["linear", "quantile"]), default=None, help="How the per-step bias meets each step's firing target: linear (default): shortfall / active share; quantile: exact on the calibration images.")
@click.option("--readout-delay", type=READOUT_DELAY, default=None, help="Leave the first K output steps out of the readout (every step is still simulated and counted). auto: the K in 0..N-1 chosen by --delay-criterion at T=N on calibration images the bias fit does not use (default with --T calibration); 0 with --calibration none.")
@click.option("--delay-criterion", type=click.Choice(list(DELAY_CRITERIA)), default=None, help="How --readout-delay auto chooses K. output-mse (default): the least squared error of the mean readout against the ANN's output; agreement: the most images whose class agrees with the ANN's (the rule before; a one-image margin often decides it).")
@click.option("--readout", type=click.Choice(list(READOUTS)), default=None, help="How the output steps are summed at T=N. delay (default above --T 8): every step after --readout-delay; weighted (default at --T 8 or less with the default calibration, binary spikes and --readout-delay auto): one weight per step, fitted by least squares against the ANN's output on the images the delay is chosen on (needs --readout-delay auto; early steps get small or negative weights). Other T read after the delay. ResNet-20-JPEG: +1.0 / +0.7 points on held-out training images at N=8 / 4 (none at N=16), +0.25 / +0.33 on the 10,000 test images. NIR cannot express it.")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=0, show_default=True, help="After calibration, train the SNN's weights for E epochs to the ANN's outputs on every calibration image (surrogate-gradient backpropagation through the N steps; the ANN is the teacher, no labels; all --calib-samples images are held in memory). One epoch costs about 3N network passes per image (N=8: ~24 ANN passes over the calibration set). Weights that do not lower the error are not kept. 0: no training.")
@click.option("--finetune-lr", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=1e-4, show_default=True, help="Adam's learning rate for --finetune-epochs.")
@click.option("--refit-classifier/--no-refit-classifier", "refit_classifier", default=None, help="Refit the final linear layer to the ANN's logits on every calibration image, by ridge least squares on the SNN's own features at T=N (one more simulation of the calibration set; the result is plain weights). Default: on with --target nir (held-out training images: ResNet-20-JPEG +7.3 points at N=8 and +2.3 at N=16, a MobileNetV2 +6.7 at N=16), off otherwise (the default pipeline gained nothing at N=16).")
@click.option("--target", "deploy_target", type=click.Choice(["annsnn", "nir"]), default="annsnn", show_default=True, help="annsnn: the best calibration annsnn runs. nir: the best one NIR can express (IF-search thresholds, a constant per-channel bias folded into the synapse bias, no readout delay, the classifier refitted to that readout); checked against 'annsnn export --nir' before anything is written.")
@click.option("--max-spikes", type=click.IntRange(min=1, max=MAX_SPIKES), default=1, show_default=True, help="Multi-threshold (burst) neurons: up to K spikes per step (thresholds 1..K, reset by subtraction); each spike is one synaptic event. 1: binary spikes. NIR export needs 1.")
@click.option("--maxpool", type=click.Choice(["spiking", "avg"]), default="spiking", show_default=True, help="spiking: a max-pool that spikes when the largest input spike count grows (output rate = max input rate); avg: replace MaxPool by AvgPool (changes the ANN).")
@click.option("--hybrid", is_flag=True, help="Keep unconvertible activations (GELU, SiLU, ...) analog instead of failing.")
@click.option("--data", help="Calibration dataset (default: recorded in the model, or the architecture's).")
@click.option("--data-root", type=NonEmptyPath(file_okay=False), help="Folder with local datasets (default $ANNSNN_DATA_ROOT or ./data).")
@click.option("--download", is_flag=True, help="Let torchvision download the dataset.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=1024, show_default=True, help="Training images used for calibration.")
@click.option("--weights", help="torchvision:NAME: read images as these weights' transforms() do (e.g. DEFAULT, IMAGENET1K_V2); zoo:NAME: also load them. timm:NAME uses timm's data config without it.")
@click.option("--resize", type=click.IntRange(min=1), help="Resize the shorter image side to N pixels (image folders, imagenet:ROOT); recorded in the SNN.")
@click.option("--crop", type=click.IntRange(min=1), help="Centre-crop N x N pixels after --resize; recorded in the SNN.")
@click.option("--device", default="cpu", show_default=True, help="Run every calibration pass on cpu, cuda or cuda:N (the SNN file is the same; a GPU is optional).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--mean", type=FLOAT_LIST, help="Input normalization mean, overriding the recorded one.")
@click.option("--std", type=FLOAT_LIST, help="Input normalization std, overriding the recorded one.")
@click.option("--input-shape", type=SHAPE, help="Input shape C,H,W.")
@click.option("--out", "out_path", type=NonEmptyPath(dir_okay=False), help="SNN file (default: next to MODEL, NAME.snn.pt).")
@click.option("--json", "json_path", type=NonEmptyPath(dir_okay=False), help="Write the conversion report as JSON.")
@click.option("--trust", is_flag=True, help="Allow unpickling a whole pickled nn.Module (runs code from the file).")
def convert(model, arch, mode, channel_wise, percentile_of, v_init, calib_T, calibration, bias_samples, threshold_scale, step_solver, readout_delay, delay_criterion, readout, finetune_epochs, finetune_lr, refit_classifier, deploy_target, max_spikes, maxpool, hybrid, data, data_root, download, calib_samples, weights, resize, crop, device, batch_size, mean, std, input_shape, out_path, json_path, trust) -> None:
    """Convert MODEL into a spiking network of IF neurons (reset by subtraction).

    BatchNorm is folded and one calibration pass over training images records each
    activation's histogram. By default each channel's threshold is searched to minimise
    the IF quantisation error at T=--T, and a per-step bias is fitted on top; an explicit
    --mode sets the thresholds instead (the bias is still fitted), and --calibration none
    is plain normalization. The scales are folded into the weights so that every threshold
    is 1 and neurons emit real 0/1 spikes. The SNN file loads without unpickling code.
    Without MODEL: the bundled digits CNN.

    MODEL may be any format 'annsnn info' reads: checkpoint or .safetensors with --arch
    (zoo, torchvision:NAME, timm:NAME), TorchScript, torch.export .pt2, or ONNX.

    \b
    Examples:
      annsnn convert               # the bundled digits CNN, calibrated for T=32
      annsnn convert model.pt --arch resnet20 --T 16 \\
          --data imagefolder:../shared/data/CIFAR10-jpeg
      # 99.99th-percentile thresholds, with the step bias fitted on top:
      annsnn convert model.pt --arch resnet20 --mode 99.99
      # plain normalization (Rueckauer et al. 2017):
      annsnn convert m.pt --arch vgg16_cifar --calibration none --v-init 0
      annsnn convert model.onnx --data cifar10
      annsnn convert ft.safetensors --arch torchvision:resnet18 \\
          --data imagefolder:DIR --input-shape 3,64,64
    """
    from annsnn.artifact import write_snn
    from annsnn.data import load_dataset, make_loader
    from annsnn.files import json_dumps
    from annsnn.model_files import convertible_module
    from annsnn.memory_estimate import check_fits
    from annsnn.outputs import OutputSet
    from annsnn.pipeline import ann_to_snn
    from annsnn.sources import default_snn_path, load_source, provenance, resolve_inputs
    from annsnn.workspace import SnnFile, check_state_dir, remember_last_snn, snn_file

    from .render import conversion_notes, conversion_table

    check_state_dir()  # where the last conversion is remembered: refused now, not after the SNN is written

    from annsnn.calibration import resolve_calibration
    from annsnn.modes import parse_mode

    from annsnn.evaluation import check_device

    check_device(device)  # before anything is loaded
    calibration_given = calibration is not None
    calibration = resolve_calibration(calibration, mode_given=mode is not None, percentile_of_given=percentile_of is not None)
    if calibration == "none" and _given("calib_T"):
        raise UsageError("--T N is the latency a calibration is fitted for; --calibration none fits none (the SNN is the same for every T): drop --T, and give the steps to simulate to evaluate/energy --T")
    if percentile_of is not None and mode is not None and mode.kind != "percentile":
        what = "reads the max (as --mode max and --mode 100 do)" if mode.kind == "max" else "is a fraction of the max"
        raise UsageError(f"--percentile-of picks the population of a percentile --mode; --mode {mode} {what}, not a percentile: drop --percentile-of, or use a percentile such as --mode 99.99")
    if deploy_target == "nir":
        from annsnn.nir_target import NIR_CALIBRATION, nir_options

        if not calibration_given:  # the default's per-step bias has no NIR form: its constant-bias counterpart (an explicit one is checked as given)
            calibration = {CALIBRATION_NAMES[0]: NIR_CALIBRATION, "step-bias": "bias"}.get(calibration, calibration)
        options = nir_options(calib_T, calibration=calibration, mode=mode or parse_mode("99.99"), channel_wise=channel_wise, percentile_of=percentile_of or "all", v_init=v_init, maxpool=maxpool,
                              hybrid=hybrid, bias_samples=bias_samples, step_solver=step_solver, threshold_scale=threshold_scale, readout_delay=readout_delay, max_spikes=max_spikes)
    else:
        options = _calibrated_options(mode or parse_mode("99.99"), channel_wise, percentile_of or "all", v_init, calib_T, calibration, bias_samples, maxpool, hybrid, step_solver, threshold_scale, readout_delay, max_spikes)
    if delay_criterion is not None:
        if options.readout_delay != "auto":
            raise UsageError(f"--delay-criterion chooses an automatic readout delay; this conversion has a fixed one ({options.readout_delay} steps: --readout-delay K, --calibration none or --target nir): leave --delay-criterion out")
        options = dataclasses.replace(options, delay_criterion=delay_criterion)
    if readout is not None:
        if deploy_target == "nir" and readout != READOUTS[0]:
            raise UsageError("--target nir: NIR's output sums every step alike; per-step readout weights have no NIR form (leave --readout out)")
        options = dataclasses.replace(options, readout=readout)  # validated there: weighted needs an automatic delay
    if not finetune_epochs and _given("finetune_lr"):
        raise UsageError("--finetune-lr is the learning rate of --finetune-epochs E: add --finetune-epochs, or drop --finetune-lr")
    if finetune_epochs:
        options = dataclasses.replace(options, finetune_epochs=finetune_epochs, finetune_lr=finetune_lr)  # validated there
    if refit_classifier is not None:
        options = dataclasses.replace(options, refit_classifier=refit_classifier)  # validated there: needs a latency
    if options.readout_delay == "auto" and calib_samples <= options.bias_images:  # before loading anything
        raise UsageError(f"--readout-delay auto is chosen on calibration images the bias fit does not use: --calib-samples {calib_samples} leaves none beyond the {options.bias_images} the bias fit takes first; pass more, a smaller --bias-samples, or --readout-delay K")
    from annsnn.data import preprocess_for

    zoo = model is not None and model.startswith("zoo:")
    preprocess = preprocess_for(arch, None if zoo else weights, resize, crop)
    loaded = load_source(model, arch, trust, weights=weights, input_shape=input_shape)  # a torchvision state_dict records W's normalization
    target = Path(out_path) if out_path else default_snn_path(model, loaded.arch)
    outputs = OutputSet(inputs=(model or "",))
    outputs.file(target)
    if json_path:
        outputs.file(json_path)
    inputs = resolve_inputs(loaded, data, mean, std, input_shape, data_root, preprocess)
    spec, norm, norm_source, shape = inputs.dataset, inputs.normalization, inputs.normalization_source, inputs.input_shape
    if preprocess is not None and not spec.name.startswith(("imagefolder:", "imagenet:")):  # only image files are resized and cropped
        if resize is not None or crop is not None:
            raise UsageError(f"--resize/--crop apply to image files (--data imagefolder:PATH or imagenet:ROOT); {spec.name}'s images are read as they are")
        preprocess = None  # the weights' own preprocessing: for image files, not recorded for a dataset that does not use it
    convertible_module(loaded, shape)
    if deploy_target == "nir" or options.maxpool == "avg":  # what the graph alone decides: refused before the calibration pass
        from annsnn.graph import canonicalize, max_pools
        from annsnn.nir_target import check_graph_expressible

        canonical = canonicalize(loaded.module, normalization=norm, hybrid=options.hybrid, input_shape=shape)  # as ann_to_snn does: the same layer names
        if options.maxpool == "avg" and not max_pools(canonical):
            raise UsageError("--maxpool avg replaces the model's max-pools by average pools, but it has no max-pool: drop --maxpool avg")
        if deploy_target == "nir":
            check_graph_expressible(canonical, options)
        del canonical
    check_fits(loaded.module, shape, batch_size)
    train = load_dataset(spec.name, "train", data_root, download, preprocess)
    available = min(calib_samples, len(train))
    if options.readout_delay == "auto" and available <= options.bias_images_of(available):  # a small training split: before the calibration pass
        raise UsageError(f"--readout-delay auto is chosen on calibration images the bias fit does not use: {spec.name} has {len(train)} training images, "
                         f"and the bias fit takes the first {options.bias_images_of(available)}; pass --bias-samples below {available}, or a fixed --readout-delay K")
    loader = make_loader(train, batch_size, calib_samples)
    meta = provenance(loaded, inputs)
    if preprocess is not None:
        meta["preprocess"] = preprocess.to_dict()  # how images are read (annsnn.data.Preprocess); evaluate reads it back
    started = time.perf_counter()
    with _progress() as progress:
        calib = (x for x, _ in _batches(loader, progress, "calibrating"))
        snn, report = ann_to_snn(loaded.module, calib, input_shape=shape, options=options, normalization=norm, meta=meta, device=device)
    if deploy_target == "nir":
        from annsnn.nir_io import to_nir
        from annsnn.nir_target import fold_constant_bias

        fold = fold_constant_bias(snn)
        snn.record = snn.record.replace(extra={**snn.record.extra, "target": "nir"})
        to_nir(snn)  # the exporter's own rules: refuses (one line naming each layer) before anything is written
        report.notes.append(f"target nir: the constant bias of {len(fold.folded)} neuron layer(s) folded into its synapse's bias; 'annsnn export --nir' takes this SNN")
    # everything that can fail runs before the first byte is written: the table, the notes and
    # the JSON text (strict: no NaN); then the SNN and the JSON are written, then remembered
    lines: list = [conversion_table(report), *conversion_notes(report, options, calibration, snn.record.calibration.readout_delay)]
    lines.append(f"input normalization: {norm_source}; calibrated on {spec.name} in {time.perf_counter() - started:.1f} s on {_device_name(device)}")
    if zoo and weights is None:
        lines.append(f"note: {model} is the architecture with random weights (untrained): its accuracy means nothing; convert a trained checkpoint ({model[4:]} via 'annsnn zoo train', or MODEL.pt --arch {model[4:]}){', or pass --weights' if loaded.arch and ':' in loaded.arch else ''}")
    if preprocess is not None:
        lines.append(f"images: resize {preprocess.resize or '-'}, centre crop {preprocess.crop or '-'}, {preprocess.interpolation} ({preprocess.source}); recorded in the SNN for evaluate")
    calibrated = {key: snn.meta[key] for key in ("calibrated_T", "readout_delay", "delay_choice", "readout_weights") if key in snn.meta}
    json_data = {"schema_version": 1, "snn": {"path": str(target), "sha256": None}, **meta, **calibrated, "report": report.to_dict()}
    json_dumps(json_data)  # fails here (strict: no NaN) before anything is written
    outputs.write(target, lambda handle: write_snn(snn, handle))
    if json_path:  # the JSON names the SNN it describes by its SHA-256 (written after it, under the same lock)
        outputs.text(json_path, lambda: json_dumps({**json_data, "snn": SnnFile(str(target), outputs.staged_sha256(target)).to_dict()}))
    outputs.commit()
    written = snn_file(target)
    remember_last_snn(target)
    for line in lines:
        out.print(line)
    out.print(f"wrote {written}  (remembered for this directory: 'annsnn evaluate' and 'annsnn energy' run here now use it)")
    if json_path:
        out.print(f"wrote {json_path}")


def _device_name(device: str) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H100 ...)``: which device ran."""
    d = torch.device(device)
    if d.type == "cuda":
        index = d.index if d.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return d.type


def _calibrated_options(mode, channel_wise, percentile_of, v_init, calib_T, calibration, bias_samples, maxpool, hybrid, step_solver=None, threshold_scale=None, readout_delay=None, max_spikes=1):
    from annsnn.conversion_options import ConversionOptions

    return ConversionOptions.calibrated(calibration, calib_T, mode=mode, channel_wise=channel_wise, percentile_of=percentile_of, v_init=v_init,
                                        maxpool=maxpool, hybrid=hybrid, bias_samples=bias_samples, step_solver=step_solver, threshold_scale=threshold_scale,
                                        readout_delay=readout_delay, max_spikes=max_spikes)


# ---------------------------------------------------------------------------
# evaluate and energy


def _event_frames(run, encoding, data_root, download, samples, batch_size):
    """With --encoding events: the run with the event dataset's frames [B, T, ...] instead of their mean."""
    if encoding != "events":
        return run
    import dataclasses

    name, split = run.dataset, run.split
    from annsnn.data import data_root as root_of, make_loader
    from annsnn.events import is_event_dataset, load_event_dataset

    if not is_event_dataset(name):
        raise UsageError(f"--encoding events needs event data (--data tonic:NAME[:T]), not {name!r}")
    return dataclasses.replace(run, loader=make_loader(load_event_dataset(name, split, root_of(data_root), download, view="frames"), batch_size, samples))


def _analyze(snn, loader, T, encoding, seed, chunk, models, count: bool, progress_path: Path | None = None, resume: bool = False, device: str = "cpu", *, data):
    """Run :func:`annsnn.evaluation.evaluate` and draw its progress events as a bar on stderr."""
    from annsnn.evaluation import BatchDone, EvalSpec, Planned, ProgressDiscarded, ProgressStore, Resumed, evaluate

    spec = EvalSpec(tuple(T), encoding, seed, tuple(models), count, chunk, device)
    store = None
    if progress_path is not None:
        folder = progress_path.parent
        if os.access(folder, os.W_OK):
            store = ProgressStore(progress_path)
        elif resume:
            raise UsageError(f"--resume reads a progress file in {folder}, which is not writable (read-only or no permission): pass --json OUT in a writable folder, where the progress file is kept")
        else:
            err.print(f"note: {folder} is not writable (read-only or no permission), so no progress file is kept and this run cannot be resumed; --json OUT in a writable folder keeps one")
    with _progress() as progress:
        state: dict = {}

        def on_event(event) -> None:
            if isinstance(event, ProgressDiscarded):
                err.print(f"note: {event.path} belongs to a different run ({', '.join(event.changed)} changed); starting afresh")
            elif isinstance(event, Resumed):
                err.print(f"resuming: {event.done} of {event.total} batches already done")
            elif isinstance(event, Planned) and state.get("rank", 0) == 0:
                state["task"] = progress.add_task(f"simulating T≤{event.max_T} (images)", total=event.todo_images, status="")
            elif isinstance(event, BatchDone) and "task" in state:
                progress.advance(state["task"], event.images)

        from annsnn.distributed import world

        state["rank"] = world()[0]
        outcome = evaluate(snn, loader, data, spec, store=store, resume=resume, on_event=on_event)
    return outcome.result, outcome.rank


def _progress_path(json_path: str | None, command: str, snn_path: Path) -> Path:
    base = Path(json_path) if json_path else snn_path.with_name(snn_path.name + f".{command}")
    return base.with_name(base.name + ".progress.pt")


_data_options = [
    click.option("--data", help="Dataset (default: the one the SNN was calibrated on)."),
    click.option("--data-root", type=NonEmptyPath(file_okay=False), help="Folder with local datasets (default $ANNSNN_DATA_ROOT or ./data)."),
    click.option("--download", is_flag=True, help="Let torchvision download the dataset."),
    click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True),
    click.option("--samples", type=click.IntRange(min=1), help="Use N samples evenly spaced over the split, in order, so every class is represented (default: all)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
    click.option("--encoding", type=click.Choice(["direct", "poisson", "events"]), default="direct", show_default=True, help="direct: the image every step; poisson: Bernoulli spikes with rate = pixel value; events: recorded event frames, one per step (--data tonic:NAME[:T])."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Poisson encoder (--encoding poisson only). Each batch draws from (seed, batch index), so the spikes depend on --batch-size too; --json records both."),
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
@click.option("--json", "json_path", type=NonEmptyPath(dir_okay=False), help="Write results (schema_version 1; accuracies as fractions).")
@click.option("--resume", is_flag=True, help="Continue a killed run from its progress file (saved after every batch).")
def evaluate(snn, T, data, data_root, download, split, samples, batch_size, encoding, seed, chunk, device, json_path, resume) -> None:
    """Accuracy of SNN at every requested T, beside its ANN on the same samples.

    One simulation of max(T) steps reads out every T (prefix sums, not re-runs), and the ANN
    is scored on exactly the same tensors. Without SNN: the last conversion made in this
    directory.

    \b
    Examples:
      annsnn evaluate              # the last conversion here, T = 5,20,50
      annsnn evaluate resnet20.snn.pt --T 8,16,32 --samples 1000 --json eval.json
      annsnn evaluate m.snn.pt --encoding poisson --seed 1 --T 50,100
    """
    from annsnn.evaluation import check_device
    from annsnn.files import check_output_path, write_json
    from annsnn.runs import open_snn_run

    from .render import evaluation_table, latency_notes, result_json

    check_device(device)
    _check_seed_applies(encoding)
    if json_path:
        check_output_path(json_path, inputs=(_input_snn(snn),))
    run = _event_frames(open_snn_run(snn, data, data_root, download, split, samples, batch_size), encoding, data_root, download, samples, batch_size)
    result, rank = _analyze(run.network, run.loader, T, encoding, seed, chunk, ("45nm-fp32",), count=False, progress_path=_progress_path(json_path, "evaluate", Path(run.file.path)), resume=resume, device=device, data=run.data)
    if rank != 0:
        return
    out.print(evaluation_table(result, run.file))
    for note in _reference_notes(run) + _held_out_notes(run) + latency_notes(run.network, T):
        out.print(f"note: {note}")
    if json_path:
        write_json(json_path, result_json(result, run))
        out.print(f"wrote {json_path}")


@cli.command()
@click.argument("snn", required=False)
@click.option("--T", "T", type=TIME_STEPS, default=DEFAULT_T, show_default=True, help="Time steps to report, e.g. 5,20,50.")
@click.option("--energy-model", "energy_models", multiple=True, help="Preset name, NAME+sram (compute plus SRAM traffic, Lemaire et al. 2022), or a JSON/TOML file; repeat for several (default 45nm-fp32, 45nm-fp32+sram, loihi). See 'annsnn energy-models'.")
@_with_data_options
@click.option("--ann", "ann_model", help="Analyze an ANN alone: MACs and energy only.")
@click.option("--arch", help="With --ann: zoo architecture of a state_dict checkpoint.")
@click.option("--input-shape", type=SHAPE, help="With --ann or --model: input shape C,H,W (a pickled network records none).")
@click.option("--per-layer", is_flag=True, help="Also show, per layer, firing rate, SyOPs, MACs and absolute energy under every model, for the SNN and the ANN.")
@click.option("--json", "json_path", type=NonEmptyPath(dir_okay=False), help="Write everything (schema_version 1).")
@click.option("--csv", "csv_path", type=NonEmptyPath(dir_okay=False), help="Write the trade-off table as CSV.")
@click.option("--markdown", "md_path", type=NonEmptyPath(dir_okay=False), help="Write the trade-off table as Markdown.")
@click.option("--plot", "plot_dir", type=NonEmptyPath(file_okay=False), help="Write PNG plots into this folder.")
@click.option("--resume", is_flag=True, help="Continue a killed run from its progress file (saved after every batch).")
@click.option("--model", "foreign_model", help="Analyze an SNN annsnn did not convert: a .nir file, a directly trained checkpoint ('annsnn zoo train --snn'), or with --trust a pickled SpikingJelly nn.Sequential (IF/LIF/PLIF nodes). Needs --data unless recorded.")
@click.option("--trust", is_flag=True, help="With --model or --ann: allow unpickling a whole pickled network (runs code from the file).")
@click.option("--dt", type=float, default=1.0, show_default=True, help="With --model X.nir: the step that discretises NIR's continuous-time neurons (forward Euler).")
@click.option("--measure", is_flag=True, help="Also run the ANN and the SNN (each T on its own) on this machine over the same samples: measured wall time, peak memory, and energy where a RAPL/NVML sensor is readable (pip install annsnn[measure]).")
@click.option("--per-dataset", is_flag=True, help="Also give the energy of the whole sample set (per inference × samples) in J and kWh, with CO2.")
@click.option("--grid-intensity", type=FiniteFloat(0.0), default=480.0, show_default=True, help="Grid carbon intensity in gCO2/kWh for the CO2 figures of --per-dataset and --measure (default: world average 2023, Ember Global Electricity Review 2024).")
def energy(snn, T, energy_models, data, data_root, download, split, samples, batch_size, encoding, seed, chunk, device, ann_model, arch, input_shape, per_layer, json_path, csv_path, md_path, plot_dir, resume, foreign_model, trust, dt, measure, per_dataset, grid_intensity) -> None:
    """Operations and energy per inference of SNN at every T, against its ANN.

    Counts come from the real spikes of one simulation: synaptic ACs (SyOPs) are the exact
    fan-out of every spike (padded positions excluded, as in the ANN's MACs), first-layer
    MACs are counted once for direct input (Poisson spikes drive it with ACs), each neuron
    costs one update per step, a spiking max-pool one comparison per input spike and window. Energy = counts × the per-op
    constants of each named, cited model. Break-even T is the largest T at which the SNN
    is still cheaper than the ANN. Without SNN: the last conversion made in this directory.

    \b
    Examples:
      annsnn energy                # the last conversion here, T = 5,20,50
      annsnn energy m.snn.pt --T 8,32 --per-layer \\
          --json e.json --csv e.csv --plot plots/
      annsnn energy --energy-model loihi --energy-model my_chip.toml
      annsnn energy --ann model.pt --arch resnet20   # an ANN alone
      annsnn energy --model direct.nir --data digits --dt 1
    """
    from annsnn.energy import get_energy_models
    from annsnn.evaluation import check_device
    from annsnn.files import json_dumps
    from annsnn.outputs import OutputSet
    from annsnn.runs import open_foreign_run, open_snn_run

    from .render import ann_layer_table, break_even_line, energy_csv, energy_markdown, energy_table, latency_notes, layer_table, result_json

    names = energy_models or ("45nm-fp32", "45nm-fp32+sram", "loihi")
    models = get_energy_models(names)  # validated before anything runs
    check_device(device)
    if not ann_model:  # with --ann, --seed is refused below as needing an SNN
        _check_seed_applies(encoding)
    if measure:
        from annsnn.hardware_measure import check_measurable

        check_measurable(encoding)
    if _given("grid_intensity") and not (measure or per_dataset or ann_model):  # with --ann it is refused below, with the rest
        raise UsageError("--grid-intensity sets the CO2 figures of --per-dataset and --measure; add one of them, or drop --grid-intensity")
    if ann_model:  # the ANN alone: what needs an SNN is refused, not dropped
        ignored = [flag for flag, given in (("SNN", snn), ("--model", foreign_model), ("--csv", csv_path), ("--markdown", md_path), ("--plot", plot_dir),
                                            ("--per-layer", per_layer), ("--measure", measure), ("--per-dataset", per_dataset), ("--resume", resume)) if given]
        ignored += _given_flags("T", "encoding", "samples", "data", "data_root", "download", "split", "batch_size", "seed", "chunk", "device", "dt", "grid_intensity")
        if ignored:
            raise UsageError(f"--ann prices the ANN alone from its MACs: {', '.join(ignored)} need{'s' if len(ignored) == 1 else ''} an SNN; drop --ann, or drop {', '.join(ignored)}")
    elif not foreign_model:  # an SNN file: what only an ANN file or a foreign model reads is refused, not dropped
        ignored = _given_flags("arch", "input_shape", "trust", "dt")
        if ignored:
            raise UsageError(f"{', '.join(ignored)} appl{'ies' if len(ignored) == 1 else 'y'} to --ann or --model files, not to an SNN file annsnn converted (it records its own); drop {', '.join(ignored)}")
    elif _given("arch"):
        raise UsageError("--arch applies to --ann (an ANN's architecture); --model files record their own network: drop --arch")
    outputs = OutputSet(inputs=(_input_snn(snn) if not (ann_model or foreign_model) else snn or "", ann_model or "", foreign_model or ""))
    for path in (json_path, csv_path, md_path):
        if path:
            outputs.file(path)
    if plot_dir:
        outputs.folder(plot_dir)
    if ann_model:
        _energy_ann_only(ann_model, arch, input_shape, models, json_path, trust)
        return
    if foreign_model and snn:
        raise UsageError("give either SNN or --model, not both")
    if foreign_model:
        run = open_foreign_run(foreign_model, trust, dt if _given("dt") else None, input_shape, data, data_root, download, split, samples, batch_size)
        if run.network.meta.get("encoding") not in (None, encoding):
            raise UsageError(f"{foreign_model} is driven by {run.network.meta['encoding']} input: pass --encoding {run.network.meta['encoding']}")
    else:
        run = open_snn_run(snn, data, data_root, download, split, samples, batch_size)
    run = _event_frames(run, encoding, data_root, download, samples, batch_size)
    result, rank = _analyze(run.network, run.loader, T, encoding, seed, chunk, models, count=True, progress_path=_progress_path(json_path, "energy", Path(run.file.path)), resume=resume, device=device, data=run.data)
    if rank != 0:
        return
    if foreign_model:
        from annsnn.foreign_snn import without_stand_in_accuracy

        result = without_stand_in_accuracy(result)
    out.print(energy_table(result, run.file))
    out.print(break_even_line(result))
    for note in result.notes + _held_out_notes(run) + latency_notes(run.network, T):
        out.print(f"note: {note}")
    if result.unsupported:
        err.print(f"warning: not counted (unsupported layers): {', '.join(result.unsupported)}")
    if per_layer:
        out.print(layer_table(result))
        out.print(ann_layer_table(result))
    data_out = result_json(result, run)
    if measure or per_dataset:
        data_out.update(_measured_and_dataset(result, run, T, chunk, device, grid_intensity, measure, per_dataset, encoding, seed))
    # every text is made (and can fail) before the first one is written; then all are written together
    for p, make in ((json_path, lambda: json_dumps(data_out)), (csv_path, lambda: energy_csv(result, run.file)), (md_path, lambda: energy_markdown(result, run.file))):
        if p:
            outputs.text(p, make())
    if plot_dir:
        from annsnn.plots import save_plots

        outputs.files_in(plot_dir, lambda folder: save_plots(result, folder, source=str(run.file)))
    for written in outputs.commit():
        out.print(f"wrote {written}")


def _measured_and_dataset(result, run, T, chunk, device, grid, measure: bool, per_dataset: bool, encoding: str, seed: int) -> dict:
    """--measure and --per-dataset: print the measured and the estimated figures apart; return their JSON."""
    from annsnn.hardware_measure import GRID_INTENSITY_G_PER_KWH, GRID_INTENSITY_SOURCE, dataset_energy_table, measure_inference

    from .render import dataset_energy_table as dataset_table, measured_table

    extra: dict = {}
    if measure:
        source = GRID_INTENSITY_SOURCE if grid == GRID_INTENSITY_G_PER_KWH else "--grid-intensity"
        measured = measure_inference(run.network, [x for x, _ in run.loader], T, device=device, chunk=chunk, grid_g_per_kwh=grid, grid_source=source, encoding=encoding, seed=seed)
        if measured.sensors.notice:
            out.print(f"note: {measured.sensors.notice}")
        out.print(measured_table(measured, result))
        for measured_run in measured.runs:
            if measured_run.energy_notice:
                out.print(f"note: {measured_run.network}: {measured_run.energy_notice}")
        for note in measured.notes:
            out.print(f"note: {note}")
        extra["measured"] = measured.to_dict()
    if per_dataset:
        table = dataset_energy_table(result, grid)
        out.print(dataset_table(table))
        extra["per_dataset"] = table.to_dict()
    return extra


def _reference_notes(run) -> list[str]:
    """A note when the ANN row is not the user's model as given (``--maxpool avg``)."""
    from annsnn.record import reference_ann_note

    note = reference_ann_note(run.network.record)
    return [note] if note else []


def _held_out_notes(run) -> list[str]:
    """A note when the scored images are the calibration images (one folder for both)."""
    if run.held_out:
        return []
    return [f"{run.dataset} has no train/ and test/ (or val/) folders: convert calibrated on these same images, so the accuracy is not on held-out data"]


def _check_seed_applies(encoding: str) -> None:
    """--seed seeds the Poisson encoder: given with other input, it would do nothing."""
    if _given("seed") and encoding != "poisson":
        raise UsageError(f"--seed seeds the Poisson encoder, and --encoding {encoding} draws nothing: drop --seed, or pass --encoding poisson")


def _given(name: str) -> bool:
    """Whether the option ``name`` was set by the user (command line or environment), not
    left at its default."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _given_flags(*names: str) -> list[str]:
    """The command-line spelling (``--input-shape``) of each option in ``names`` (parameter
    names) that the user set, in the order given."""
    params = {p.name: p for p in click.get_current_context().command.params}
    return [max(params[name].opts, key=len) for name in names if _given(name)]


def _input_snn(snn: str | None) -> str:
    """The SNN a command reads: the one given, else this folder's last conversion ("" when
    there is none), so that no output of the run can be written over it."""
    if snn:
        return snn
    from annsnn.workspace import last_snn

    try:
        return str(last_snn())
    except UsageError:
        return ""


def _energy_ann_only(model, arch, input_shape, models, json_path, trust: bool = False) -> None:
    """``energy --ann``: MACs and compute energy of the ANN alone (:func:`annsnn.analyzer.ann_energy`)."""
    from annsnn.analyzer import ann_energy
    from annsnn.files import write_json
    from annsnn.model_files import convertible_module
    from annsnn.memory_estimate import check_fits
    from annsnn.sources import load_source, model_input_shape

    from .render import ann_energy_lines

    if all(m.memory is not None for m in models):
        ann_energy(torch.nn.Identity(), (1,), models)  # refuses before loading anything
    loaded = load_source(model, arch, trust)
    shape = model_input_shape(loaded, input_shape)
    module = convertible_module(loaded, shape)
    check_fits(module, shape, 1)
    result = ann_energy(module, shape, models)
    out.print(f"{loaded.path} (the ANN alone, as given: BatchNorm not folded)")
    for line in ann_energy_lines(result):
        out.print(line)
    if json_path:
        write_json(json_path, {**result.to_dict(), "model": loaded.path})
        out.print(f"wrote {json_path}")


@cli.command("energy-models")
def energy_models_cmd() -> None:
    """List the energy-model presets with their constants and sources.

    \b
    Example:
      annsnn energy-models      # then: annsnn energy --energy-model NAME
    """
    from annsnn.energy import PRESETS

    from .render import energy_models_table

    out.print(energy_models_table(PRESETS))
    out.print("E_MAC –: a neuromorphic chip has no MACs; its ANN comparison uses the ann_reference digital model")
    out.print("memory-aware: NAME+sram adds memory accesses (weights, inputs, potentials) to a digital model: SRAM priced by tensor size, DRAM for tensors over 1 MiB; values as wide as the model's precision")
    out.print('custom: a JSON/TOML file {"name" (not a preset\'s), "e_ac_pj", "e_neuron_pj", "citation", "e_mac_pj" (digital), or "kind": "neuromorphic" '
              'without e_mac_pj and with an optional digital "ann_reference"} passed to --energy-model')


# ---------------------------------------------------------------------------
# robustness


class _Strengths(click.ParamType):
    name = "S[,S...]|START:STOP:STEP"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from annsnn.robustness import parse_strengths

        try:
            return parse_strengths(value, f"--{param.name.replace('_', '-')}" if param is not None and param.name else "strengths")
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


STRENGTHS = _Strengths()


@cli.command()
@click.argument("snn", required=False)
@click.option("--T", "T", type=TIME_STEPS, default=DEFAULT_T, show_default=True, help="Time steps to read out (one simulation of max(T) per perturbed batch).")
@click.option("--noise", type=STRENGTHS, help="Gaussian noise σ in pixel units ([0,1] images), e.g. 0,0.05,0.1,0.2; clipped to [0, 1].")
@click.option("--salt-pepper", type=STRENGTHS, help="Salt-and-pepper: fraction of values set to 0 or 1, e.g. 0,0.05,0.1.")
@click.option("--fgsm", type=STRENGTHS, help="FGSM ε in [0, 1], e.g. 0,0.05,0.1 or 0:1:0.05 (start:stop:step, inclusive).")
@click.option("--pgd", type=STRENGTHS, help="PGD (torchattacks, L∞, random start) ε in [0, 1].")
@click.option("--attack-on", type=click.Choice(["ann", "snn", "both"]), default="ann", show_default=True, help="Where attacks are crafted: ann (white-box on the ANN, transfer to the SNN), snn (directly on the SNN through its IF dynamics, surrogate gradient, BPTT), or both.")
@click.option("--attack-T", "attack_T", type=click.IntRange(min=1), help="Time steps of the SNN used to craft direct attacks (--attack-on snn or both; default max T).")
@click.option("--pgd-steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--surrogate", type=click.Choice(["atan", "sigmoid", "erf", "piecewise-quadratic"]), default="atan", show_default=True, help="spikingjelly surrogate spike gradient for direct SNN attacks (--attack-on snn or both).")
@click.option("--data", help="Dataset (default: the one the SNN was calibrated on).")
@click.option("--data-root", type=NonEmptyPath(file_okay=False), help="Folder with local datasets.")
@click.option("--download", is_flag=True, help="Let torchvision download the dataset.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--samples", type=click.IntRange(min=1), help="Use N evenly spaced samples (default: all).")
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise and of PGD's random start.")
@click.option("--chunk", type=click.IntRange(min=1), help="Time steps simulated at once (default: automatic).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--json", "json_path", type=NonEmptyPath(dir_okay=False), help="Write every score (with confusion matrices) as JSON.")
@click.option("--csv", "csv_path", type=NonEmptyPath(dir_okay=False), help="Write one line per network, T and strength as CSV.")
@click.option("--plot", "plot_dir", type=NonEmptyPath(file_okay=False), help="Write accuracy-vs-strength PNGs (ANN and one curve per T) into this folder.")
def robustness(snn, T, noise, salt_pepper, fgsm, pgd, attack_on, attack_T, pgd_steps, surrogate, data, data_root, download, split, samples, batch_size, seed, chunk, device, json_path, csv_path, plot_dir) -> None:
    """Accuracy of SNN and its ANN under noise and adversarial attacks.

    Each perturbed batch goes, as the same tensor, to the ANN and to the SNN; the SNN is
    simulated once for max(T) steps and read out at every T. Every row says where its attack
    was crafted: on the ANN (white-box; a transfer attack for the SNN) or on the SNN itself
    (gradients through the IF dynamics with a surrogate spike gradient, BPTT over --attack-T).
    Without SNN: the last conversion.

    \b
    Examples:
      annsnn robustness --T 8,32 --noise 0,0.05,0.1,0.2 --fgsm 0:1:0.05 \\
          --samples 500 --plot plots/
      annsnn robustness m.snn.pt --fgsm 0,0.02,0.05 --pgd 0.02 \\
          --attack-on both --attack-T 8 --json r.json
    """
    from annsnn.evaluation import check_device
    from annsnn.files import json_dumps
    from annsnn.outputs import OutputSet
    from annsnn.robustness import RobustnessSpec, run_robustness
    from annsnn.runs import open_snn_run

    from .render import robustness_csv, robustness_table

    spec = RobustnessSpec(time_steps=tuple(T), gaussian=noise or (), salt_pepper=salt_pepper or (), fgsm=fgsm or (), pgd=pgd or (),
                          attack_on=attack_on, attack_T=attack_T, pgd_steps=pgd_steps, surrogate=surrogate, seed=seed)
    if not (noise or salt_pepper or fgsm or pgd):
        raise UsageError("give at least one of --noise, --salt-pepper, --fgsm, --pgd")
    unused = [f"--{name.replace('_', '-')}" for name in ("attack_on", "attack_T", "surrogate") if not (fgsm or pgd) and _given(name)]
    unused += ["--pgd-steps"] if not pgd and _given("pgd_steps") else []
    if unused:  # they shape attacks only: refused, not ignored
        raise UsageError(f"{', '.join(unused)} set{'s' if len(unused) == 1 else ''} how attacks are crafted; add --fgsm or --pgd{' (--pgd for --pgd-steps)' if '--pgd-steps' in unused else ''}, or drop {'it' if len(unused) == 1 else 'them'}")
    direct = _given_flags("attack_T", "surrogate") if attack_on == "ann" else []
    if direct:  # they shape attacks crafted on the SNN only: refused, not recorded as used
        raise UsageError(f"{', '.join(direct)} shape{'s' if len(direct) == 1 else ''} attacks crafted on the SNN; --attack-on ann crafts them on the ANN: add --attack-on snn or both, or drop {', '.join(direct)}")
    check_device(device)
    outputs = OutputSet(inputs=(_input_snn(snn),))
    for path in (json_path, csv_path):
        if path:
            outputs.file(path)
    if plot_dir:
        outputs.folder(plot_dir)
    run = open_snn_run(snn, data, data_root, download, split, samples, batch_size)
    with _progress() as progress:
        task = progress.add_task(f"perturbing, simulating T≤{max(T)} (images)", total=len(run.loader.dataset), status="")
        result = run_robustness(run.network, run.loader, spec, chunk=chunk, device=device, on_batch=lambda images: progress.advance(task, images))
    out.print(robustness_table(result, run.file))
    for note in result.notes:
        out.print(f"note: {note}")
    if json_path:
        outputs.text(json_path, json_dumps({**result.to_dict(), **run.header()}))
    if csv_path:
        outputs.text(csv_path, robustness_csv(result, run.file))
    if plot_dir:
        from annsnn.plots import save_robustness_plots

        outputs.files_in(plot_dir, lambda folder: save_robustness_plots(result, folder, source=str(run.file)))
    for written in outputs.commit():
        out.print(f"wrote {written}")


# ---------------------------------------------------------------------------
# demo


@cli.command()
@click.option("--out-dir", type=NonEmptyPath(file_okay=False), default=".", show_default=True, help="Where the SNN, JSON and plots go.")
@click.option("--T", "T", type=TIME_STEPS, default=DEFAULT_T, show_default=True)
def demo(out_dir: str, T) -> None:
    """The whole job on the bundled digits CNN, no download: convert it with the default
    calibrated pipeline (calibrated for T = max(T)) and with plain 99.99th-percentile
    normalization, then show accuracy, ops and energy at every T, with plots.

    \b
    Examples:
      annsnn demo                               # SNN, demo.json and plots/ here
      annsnn demo --out-dir demo-out --T 5,20   # elsewhere, at two latencies
    """
    from annsnn.artifact import write_snn
    from annsnn.conversion_options import ConversionOptions
    from annsnn.data import load_dataset, make_loader
    from annsnn.evaluation import data_spec_for
    from annsnn.files import json_dumps
    from annsnn.modes import parse_mode
    from annsnn.outputs import OutputSet
    from annsnn.pipeline import ann_to_snn
    from annsnn.plots import save_plots
    from annsnn.runs import SnnRun
    from annsnn.sources import load_source, provenance, resolve_inputs
    from annsnn.workspace import SnnFile, check_state_dir, remember_last_snn

    from .render import break_even_line, conversion_table, energy_table, result_json

    check_state_dir()
    directory = Path(out_dir)
    outputs = OutputSet()
    outputs.folder(directory)  # refused now if it cannot be created or written
    target = directory / "digits_cnn.snn.pt"
    loaded = load_source(None)
    inputs = resolve_inputs(loaded)
    steps = sorted(T) if not isinstance(T, int) else [T]
    plain_options = ConversionOptions.plain(mode=parse_mode("99.99"))
    options = _calibrated_options(parse_mode("99.99"), None, "all", 0.5, max(steps), CALIBRATION_NAMES[0], None, "spiking", False)  # convert's default for N = max(T)
    started = time.perf_counter()
    meta = provenance(loaded, inputs)
    with _progress() as progress:
        images = [x for x, _ in _batches(make_loader(load_dataset("digits", "train"), 256), progress, "calibrating")]
    plain, _ = ann_to_snn(loaded.module, iter(images), input_shape=inputs.input_shape, options=plain_options, normalization=inputs.normalization, meta=meta)
    snn, report = ann_to_snn(loaded.module, iter(images), input_shape=inputs.input_shape, options=options, normalization=inputs.normalization, meta=meta)
    out.print(conversion_table(report))
    import io as _io

    snn_bytes = _io.BytesIO()
    write_snn(snn, snn_bytes)
    import hashlib

    test_loader = make_loader(load_dataset("digits", "test"), 360)
    run = SnnRun(SnnFile(str(target), hashlib.sha256(snn_bytes.getvalue()).hexdigest()), snn, "digits", "test", test_loader, data_spec_for("digits", "test", None, 360, None))
    plain_result, _ = _analyze(plain, test_loader, T, "direct", 0, None, ("45nm-fp32",), count=False, data=run.data)
    used = sum(int(x.shape[0]) for x in images)  # every training digit: 'convert' alone takes --calib-samples (1,024 by default)
    out.print(f"plain normalization (annsnn convert --calibration none --v-init 0 --calib-samples {used}): top-1 " + ", ".join(f"T={row.T}: {100 * (row.top1 or 0.0):.1f}%" for row in plain_result.rows))
    out.print(f"calibrated (annsnn convert --T {max(steps)} --calib-samples {used}: {CALIBRATION_NAMES[0]}, valid for every T <= {max(steps)}):")
    result, _ = _analyze(snn, test_loader, T, "direct", 0, None, ("45nm-fp32", "45nm-fp32+sram", "loihi"), count=True, data=run.data)
    out.print(energy_table(result, run.file))
    out.print(break_even_line(result))
    data_out = {**result_json(result, run), "conversion": report.to_dict(), "plain_top1": {str(row.T): row.top1 for row in plain_result.rows}}
    json_text = json_dumps(data_out)

    def write_all(folder: Path) -> None:  # the SNN, the JSON and the plots, moved into --out-dir together
        (folder / target.name).write_bytes(snn_bytes.getvalue())
        (folder / "demo.json").write_text(json_text, encoding="utf-8")
        save_plots(result, folder / "plots", plain=plain_result, source=str(run.file))

    outputs.files_in(directory, write_all)
    outputs.commit()
    remember_last_snn(target)
    plots = sorted((directory / "plots").glob("*.png"))
    out.print(f"wrote {run.file}, {directory / 'demo.json'} and plots: " + ", ".join(str(p) for p in plots))
    out.print(f"done in {time.perf_counter() - started:.1f} s; next: 'annsnn evaluate' or 'annsnn energy --T 5,20,50' (run from this directory) reuse this SNN")


# ---------------------------------------------------------------------------
# NIR


@cli.command("export")
@click.argument("snn", required=False)
@click.option("--nir", "nir_path", required=True, type=NonEmptyPath(dir_okay=False), help="Write the SNN as a NIR graph (HDF5) to this file.")
def export_cmd(snn: str | None, nir_path: str) -> None:
    """Write a converted SNN in the Neuromorphic Intermediate Representation (NIR), which
    snnTorch, Norse, sinabs, Rockpool, Lava/Loihi 2, SpiNNaker 2 and Speck/Xylo read.

    \b
    Examples:
      annsnn export model.snn.pt --nir model.nir
      annsnn export --nir last.nir  # the last conversion made in this directory

    Nodes: Conv, Affine/Linear, IF (r=1, v_threshold=1, dt=1), AvgPool2d, Flatten, Scale,
    residual adds as edges. Reset by subtraction, firing at v >= 1 and v_init go into each
    IF node's metadata (NIR 1.0 has no fields for them); the input normalization and the
    analog first-layer input into the graph's metadata. A layer NIR cannot express (spiking
    max-pool, hybrid analog activation, padding/slicing shortcut) stops the export with one
    line listing all of them, and nothing is written. Without SNN: the last conversion.
    """
    from annsnn.artifact import load_snn
    from annsnn.files import check_output_path
    from annsnn.nir_io import export_nir
    from annsnn.workspace import last_snn

    path = Path(snn) if snn else last_snn()
    check_output_path(nir_path, inputs=(str(path),))
    from annsnn.workspace import snn_file

    result = export_nir(load_snn(path), nir_path, source=snn_file(path))
    kinds: dict[str, int] = {}
    for kind in result.nodes.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    out.print(f"wrote {result.path}: {len(result.nodes)} nodes ({', '.join(f'{v} {k}' for k, v in kinds.items())}), {result.edges} edges")
    for note in result.notes:
        out.print(f"note: {note}")


@cli.command("import-nir")
@click.argument("nir_file")
@click.option("--dt", type=float, default=1.0, show_default=True, help="Step that discretises NIR's continuous-time neurons (forward Euler).")
@click.option("--input-shape", type=SHAPE, help="Input shape C,H,W if the graph does not give it.")
def import_nir_cmd(nir_file: str, dt: float, input_shape) -> None:
    """Read a NIR graph and show how annsnn runs it: layers, neurons and their discrete-time
    update. 'annsnn energy --model FILE.nir --data NAME' then counts SyOPs and energy.

    IF/LIF nodes written by others follow NIR's equations with forward Euler at --dt:
    a strict threshold and reset to v_reset. Unknown node types, recurrent edges and
    per-neuron parameter arrays are refused in one line.

    \b
    Examples:
      annsnn import-nir model.nir
      annsnn import-nir snntorch_export.nir --dt 0.5 --input-shape 1,28,28
    """
    from annsnn.nir_io import load_nir

    from .render import nir_table

    out.print(nir_table(load_nir(nir_file, dt=dt, input_shape=input_shape), nir_file, dt))


# ---------------------------------------------------------------------------
# zoo


@cli.group()
def zoo() -> None:
    """Architectures by name, and training them.

    \b
    Examples:
      annsnn zoo list --no-macs
      annsnn zoo train lenet5 --data mnist --epochs 2
    """


@zoo.command("list")
@click.option("--macs/--no-macs", default=True, show_default=True, help="Count MACs (slower for ImageNet models).")
def zoo_list(macs: bool) -> None:
    """Show every architecture with its input, parameters and MACs.

    \b
    Example:
      annsnn zoo list --no-macs   # faster: skips counting the ImageNet models
    """
    from annsnn.counting import count_ann
    from annsnn.zoo import architectures, build

    from .render import zoo_table

    rows = []
    for spec in architectures().values():
        model = build(spec.name)
        params = sum(p.numel() for p in model.parameters())
        rows.append((spec.name, "×".join(map(str, spec.input_shape)), spec.dataset, params, count_ann(model, spec.input_shape).macs if macs else None, spec.description))
    out.print(zoo_table(rows))
    from .stdp import STDP_ARCH

    out.print(f"Also {STDP_ARCH}: an SNN that learns without labels by STDP (Diehl & Cook 2015), not an ANN to convert: annsnn zoo train {STDP_ARCH} --snn --rule stdp")


@zoo.command("train")
@click.argument("arch")
@click.option("--data", default="digits", show_default=True, help="Dataset name.")
@click.option("--data-root", type=NonEmptyPath(file_okay=False))
@click.option("--download", is_flag=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=FiniteFloat(0.0, open_low=True), default=1e-3, show_default=True, help="Adam's learning rate (> 0).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--samples", type=click.IntRange(min=1), help="Train on N training samples: for ANN and surrogate-gradient training N evenly spaced ones (every class represented); for --rule stdp a fresh random N each epoch.")
@click.option("--out", "out_path", type=NonEmptyPath(dir_okay=False), help="Checkpoint file (default ARCH-DATA.pt, or ARCH-DATA-snnT.pt with --snn).")
@click.option("--snn", "direct_snn", is_flag=True, help="Train a spiking network directly (surrogate gradients, SpikingJelly LIF neurons in place of the ReLUs, direct encoding) instead of an ANN.")
@click.option("--T", "T", type=click.IntRange(min=1), default=5, show_default=True, help="With --snn: time steps per sample.")
@click.option("--tau", type=FiniteFloat(1.0), default=2.0, show_default=True, help="With --snn: LIF membrane time constant in steps.")
@click.option("--rule", type=click.Choice(["surrogate", "stdp"]), default="surrogate", show_default=True, help="With --snn: surrogate gradients, or unsupervised STDP (arch stdp_mnist, Diehl & Cook 2015). With stdp, what is not given defaults to --data mnist, --epochs 1, 20,000 training images (--samples), --T 125 presentation steps of 2 ms and --batch-size 64, not the values shown for the other kinds.")
@click.option("--neurons", type=click.IntRange(min=1), default=400, show_default=True, help="With --rule stdp: excitatory neurons.")
@click.option("--assign-samples", type=click.IntRange(min=1), default=10000, show_default=True, help="With --rule stdp: training images (learning off) that assign each neuron its label.")
@click.option("--test-samples", type=click.IntRange(min=1), help="With --rule stdp: test images scored after each epoch, evenly spaced (default: all).")
@click.option("--device", default="cpu", show_default=True, help="Train the ANN on cpu, cuda or cuda:N.")
@click.pass_context
def zoo_train(ctx, arch, data, data_root, download, epochs, lr, batch_size, optimizer, seed, samples, out_path, direct_snn, T, tau, rule, neurons, assign_samples, test_samples, device) -> None:
    """Train ARCH on a dataset; the checkpoint records arch, dataset and normalization,
    so 'annsnn convert FILE' needs no other flag.

    \b
    Examples:
      annsnn zoo train digits_cnn --epochs 30
      # a directly trained SNN baseline:
      annsnn zoo train lenet5 --data mnist --snn --T 5 --epochs 2
    Its checkpoint (weights and JSON config; loads weights-only) is analysed with
      annsnn energy --model lenet5-mnist-snn5.pt --T 5,20,50
    Unsupervised STDP (Diehl & Cook 2015), e.g.
      annsnn zoo train stdp_mnist --snn --rule stdp --data mnist   # 20,000 images
    """
    from annsnn.files import atomic_path, check_output_path
    from annsnn.zoo.train import TrainConfig, checkpoint_dict, train

    from annsnn.evaluation import check_device

    check_device(device)
    given = _given_flags("T", "tau", "lr", "optimizer", "neurons", "assign_samples", "test_samples")
    kind, applies = ("STDP training (--snn --rule stdp)", {"--T", "--neurons", "--assign-samples", "--test-samples"}) if rule == "stdp" else \
        ("surrogate-gradient SNN training (--snn)", {"--T", "--tau", "--lr", "--optimizer"}) if direct_snn else ("ANN training", {"--lr", "--optimizer"})
    ignored = [flag for flag in given if flag not in applies]
    if ignored:
        raise UsageError(f"{', '.join(ignored)} do{'es' if len(ignored) == 1 else ''} not apply to {kind}; drop {', '.join(ignored)}")
    if rule != "stdp":
        from annsnn.zoo import check_architecture

        from .stdp import STDP_ARCH

        if arch == STDP_ARCH:
            raise UsageError(f"{STDP_ARCH} learns by STDP: add --snn --rule stdp")
        check_architecture(arch)
    if rule == "stdp":
        from .stdp import train_stdp_command

        if not direct_snn:
            raise UsageError("--rule stdp trains a spiking network: add --snn")
        if device != "cpu":
            raise UsageError("--device applies to ANN training; --rule stdp trains on the CPU")
        source = click.core.ParameterSource
        steps = None if ctx.get_parameter_source("T") == source.DEFAULT else T
        data = "mnist" if ctx.get_parameter_source("data") == source.DEFAULT else data
        batch = None if ctx.get_parameter_source("batch_size") == source.DEFAULT else batch_size
        epochs = 1 if ctx.get_parameter_source("epochs") == source.DEFAULT else epochs
        target = Path(out_path or f"{arch}-{data.replace(':', '_').replace('/', '_')}-stdp{neurons}.pt")
        check_output_path(target)
        train_stdp_command(arch, data, data_root, download, epochs, batch, seed, samples, steps, neurons, assign_samples, test_samples, target, _progress, out, err)
        return
    if direct_snn and device != "cpu":
        raise UsageError("--device applies to ANN training; --snn trains on the CPU")

    suffix = f"-snn{T}" if direct_snn else ""
    target = Path(out_path or f"{arch}-{data.replace(':', '_').replace('/', '_')}{suffix}.pt")
    check_output_path(target)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if direct_snn:
        _train_direct(arch, data, data_root, download, epochs, lr, batch_size, optimizer, seed, samples, T, tau, target)
        return
    config = TrainConfig(arch=arch, dataset=data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, optimizer=optimizer, data_root=data_root, download=download, train_samples=samples, device=device)
    with _progress() as progress:
        task = progress.add_task(f"training {arch} on {device}", total=None, status="")

        def on_step(step: int, total: int, loss: float, acc: float) -> None:
            progress.update(task, completed=step, total=total, status=f"loss {loss:.4f} acc {100 * acc:.2f}%")

        result = train(config, on_step)
    with atomic_path(target) as tmp:
        torch.save(checkpoint_dict(config, result), str(tmp))
    for row in result.history:
        out.print(f"epoch {row['epoch']}: loss {row['loss']:.4f}  train {100 * row['train_top1']:.2f}%  test {100 * row['test_top1']:.2f}%")
    out.print(f"wrote {target} (test top-1 {100 * result.test_top1:.2f}%; trained on {device})")


def _train_direct(arch, data, data_root, download, epochs, lr, batch_size, optimizer, seed, samples, T, tau, target: Path) -> None:
    from annsnn.files import atomic_path
    from annsnn.zoo.direct import DirectConfig, EpochEvent, direct_checkpoint, train_direct

    if optimizer != "adam":
        raise UsageError("--snn trains with adam")
    config = DirectConfig(arch=arch, dataset=data, T=T, tau=tau, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, data_root=data_root, download=download, train_samples=samples)
    with _progress() as progress:
        task = progress.add_task(f"training {arch} as an SNN (T={T})", total=None, status="")

        def on_event(event: EpochEvent) -> None:
            status = f"epoch {event.epoch}/{epochs} loss {event.loss:.4f} acc {100 * event.train_top1:.2f}%"
            if event.epoch_done and event.test_top1 is not None:
                status += f" test {100 * event.test_top1:.2f}%"
            progress.update(task, completed=event.step, total=event.total_steps, status=status)

        result = train_direct(config, on_event)
    with atomic_path(target) as tmp:
        torch.save(direct_checkpoint(config, result), str(tmp))
    for row in result.history:
        out.print(f"epoch {row['epoch']}: loss {row['loss']:.4f}  train {100 * row['train_top1']:.2f}%  test {100 * row['test_top1']:.2f}%")
    out.print(f"wrote {target} (test top-1 {100 * result.test_top1:.2f}% at T={T}, trained in {result.train_time_s:.1f} s); analyse it with 'annsnn energy --model {target}'")


# ---------------------------------------------------------------------------


# disk full, read-only, permission, quota: conditions of the user's machine, one line and exit 2
_MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT})


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
        err.print("interrupted")  # as Ctrl-C while the libraries load (cli/entry.py)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:  # 'annsnn' or 'annsnn zoo' alone: a request for help
        click.echo(exc.ctx.get_help())
        sys.exit(0)
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
    except OSError as exc:
        if debug:
            raise
        if exc.errno in _MACHINE_ERRNOS:
            print(f"error: cannot write {exc.filename!r}: {exc.strerror}" if exc.filename else f"error: {exc.strerror}", file=sys.stderr)
            sys.exit(2)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""  # one line, as the last resort below: never a traceback
        print(f"error: internal error ({type(exc).__name__}: {text}); rerun as 'annsnn --debug COMMAND ...' for the traceback", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - last resort, one line
        if debug:
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: internal error ({type(exc).__name__}: {text}); rerun as 'annsnn --debug COMMAND ...' for the traceback", file=sys.stderr)
        sys.exit(1)
