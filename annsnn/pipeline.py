"""One call from a trained ANN to a calibrated, converted :class:`SpikingNetwork`."""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .calibrator import Calibrator
from .conversion_options import ConversionOptions, ConversionReport
from .convert import convert
from .equivalence import Equivalence, check_equivalence
from .errors import UsageError
from .graph import canonicalize
from .ops import OpRegistry
from .record import Calibration, SnnRecord, calibration_method
from .snn import SpikingNetwork

__all__ = ["ann_to_snn", "check_finite_weights"]


def check_finite_weights(model: nn.Module) -> None:
    """Refuse a model with NaN or infinite parameters or buffers before calibrating."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UsageError(f"the model has NaN or infinite values in {name}; fix or retrain it before converting")


def _check_float32_parameters(model: nn.Module) -> None:
    """Refuse a model whose floating-point parameters are not float32 (the SNN computes in float32)."""
    for name, tensor in model.named_parameters():
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            raise UsageError(f"the model's parameters are {str(tensor.dtype).removeprefix('torch.')} ({name}); annsnn converts float32 models: pass model.float()")


def _calibration_images(batch: object, index: int) -> Tensor:
    """A calibration batch as images: a tensor, or the images of an (images, labels) pair
    (a DataLoader over a labelled dataset); float32 and finite, or one clear error."""
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        batch = batch[0]
    if not isinstance(batch, Tensor):
        raise UsageError(f"calibration batch {index} is a {type(batch).__name__}; give image tensors [B, C, H, W] or (images, labels) pairs")
    if batch.dtype != torch.float32:
        raise UsageError(f"calibration batch {index} is {str(batch.dtype).removeprefix('torch.')}; give float32 images, scaled as the model takes them")
    if not bool(torch.isfinite(batch).all()):
        raise UsageError(f"calibration batch {index} holds NaN or infinite values")
    return batch


def ann_to_snn(
    model: nn.Module,
    calibration: Iterable[Tensor],
    *,
    input_shape: tuple[int, ...],
    options: ConversionOptions = ConversionOptions(),
    normalization: tuple[list[float], list[float]] | None = None,
    meta: dict | None = None,
    on_batch: Callable[[int], None] | None = None,
    registry: OpRegistry | None = None,
    device: str | torch.device = "cpu",
) -> tuple[SpikingNetwork, ConversionReport]:
    """Canonicalize, calibrate once over ``calibration`` batches, convert.

    ``calibration`` yields input batches ``[B, *input_shape]`` (float32) as the data loader
    gives them (before normalization, which ``normalization`` adds in front), or
    ``(images, labels)`` pairs, whose labels are not read.

    The first batch also runs through the user's model: the canonical ANN must give the
    same output within a float tolerance (:func:`~annsnn.equivalence.check_equivalence`),
    or conversion stops with one line naming the first diverging node. The check is
    recorded in ``report.equivalence`` and ``snn.record.equivalence``; the SNN's reference
    ANN (``snn.ann``) is that verified canonical graph.

    ``registry`` (default :func:`annsnn.ops.default_registry`) holds the ops conversion
    knows; the SNN keeps it (``snn.registry``) for counting and saving.

    ``device``: where every calibration pass runs (observers and histograms, the threshold
    search, the bias and step-bias fits, the readout-delay choice); batches are moved there
    one at a time. The SNN returned lives on the CPU (it is saved from there).
    """
    if not isinstance(options, ConversionOptions):
        raise UsageError(f"options is a {type(options).__name__}; give a ConversionOptions (ConversionOptions.plain(), .calibrated(...), .low_latency(T))")
    check_finite_weights(model)
    _check_float32_parameters(model)
    device = torch.device(device)
    canonical = canonicalize(model, normalization=normalization, hybrid=options.hybrid, maxpool_to_avgpool=options.maxpool == "avg", input_shape=input_shape, registry=registry)
    if options.max_spikes > 1 and options.maxpool == "spiking":  # known from the graph: refused before the calibration pass
        from .rules.scale import burst_maxpool_error, burst_maxpools

        pools = burst_maxpools(canonical.module, canonical.registry)
        if pools:
            raise burst_maxpool_error(pools[0])
    calibrator = Calibrator(canonical, channel_wise=options.channel_wise, device=device)
    equivalence: Equivalence | None = None
    kept: list[Tensor] = []  # the first bias_samples images, for the bias passes
    held = 0
    choice: list[Tensor] = []  # the next delay_samples images: the readout delay is chosen on them
    chosen = 0
    others: list[Tensor] = []  # --finetune-epochs, --refit-classifier: every other calibration image (the training set, with the two above)
    for index, item in enumerate(calibration):
        batch = _calibration_images(item, index)
        if tuple(batch.shape[1:]) != tuple(input_shape):
            raise UsageError(f"calibration batch has shape {tuple(batch.shape[1:])}, the model expects {tuple(input_shape)}")
        if equivalence is None:
            equivalence = check_equivalence(canonical, batch)  # on the CPU, where the user's model is
            canonical.module.to(device)  # with the layers the calibrator's graph shares
        batch = batch.to(device)
        calibrator.observe(batch)
        if options.bias != "none" and held < options.bias_samples:
            kept.append(batch[: options.bias_samples - held])
            held += int(kept[-1].shape[0])
            rest = batch[int(kept[-1].shape[0]) :]
        else:
            rest = batch
        if options.readout_delay == "auto" and chosen < options.delay_samples and int(rest.shape[0]):
            choice.append(rest[: options.delay_samples - chosen])
            chosen += int(choice[-1].shape[0])
            rest = rest[int(choice[-1].shape[0]) :]
        if (options.finetune_epochs or options.refit_classifier) and int(rest.shape[0]):
            others.append(rest)
        if on_batch is not None:
            on_batch(int(batch.shape[0]))
    if options.readout_delay == "auto" and chosen < options.delay_samples:  # a small calibration set: the bias may give images to the delay choice
        give = held - options.bias_images_of(held + chosen)
        if give > 0:
            bias_images = torch.cat(kept)
            kept, choice = [bias_images[: held - give]], [bias_images[held - give :], *choice]
            held, chosen = held - give, chosen + give
    if options.readout_delay == "auto" and not choice:
        raise UsageError(f"--readout-delay auto is chosen on calibration images the bias fit does not use: pass more than {options.bias_images} calibration images "
                         f"(--calib-samples > --bias-samples; in Python, more images or ConversionOptions.low_latency(T, bias_samples=...)), or a fixed --readout-delay K")
    with torch.device("cpu"):  # folding the scales into the weights: cheap, on the CPU; the threshold search reads the observers where they are
        graph, report = convert(calibrator, options, input_shape)
    if report.neurons == 0:  # e.g. --hybrid on a model whose only activations are GELU/SiLU
        report.notes.append("no activation became spiking neurons (--hybrid keeps every one of them analog): this network does not spike, "
                            "it computes the ANN at every step, and its readout choices have no spikes to act on")
    if options.max_spikes > 1:
        report.notes.append(f"burst neurons: up to {options.max_spikes} spikes per step (thresholds 1..{options.max_spikes}), each spike worth 1/{options.max_spikes} of the layer's searched ceiling")
    del calibrator  # its histograms are read; the bias passes below need the memory
    report.equivalence = equivalence
    canonical.module.to("cpu")
    with torch.device("cpu"):
        sizes = _activation_sizes(canonical.module, input_shape)
    given = dict(meta or {})  # provenance from the caller: source, dataset, normalization, annsnn_version
    record = SnnRecord.from_meta({
        **given,
        "options": options.to_dict(),
        "input_shape": list(input_shape),
        "max_activation_numel": max(sizes) if sizes else 1,
        "scales": {layer.name: layer.scale for layer in report.layers if layer.spiking},
        "report": report.to_dict(),
        "equivalence": report.to_dict()["equivalence"],
    })
    snn = SpikingNetwork(graph, canonical.module, record, registry=canonical.registry)
    snn.runner("direct")  # built now: a model the time-merged run cannot take is refused here, not at its first simulation
    snn.to(device)  # the bias fits and the readout-delay choice simulate it there
    bias_fit: dict | None = None
    if options.bias != "none":
        from .calibration import fit_layer_bias, fit_step_bias

        assert options.T is not None
        images = torch.cat(kept)
        fit = fit_step_bias(snn, images, options.T, options.step_solver) if options.bias == "step" else fit_layer_bias(snn, images, options.T)
        report.notes.append(f"{options.bias} bias fitted for T={options.T} on {fit.samples} calibration images")
        bias_fit = fit.to_dict()
    delay_choice: dict | None = None
    readout_delay = 0
    readout_weights: tuple[float, ...] = ()
    if options.readout_delay == "auto":
        from .calibration import choose_readout_delay

        assert options.T is not None
        delay = choose_readout_delay(snn, torch.cat(choice), options.T, options.delay_criterion, fit_weights=options.readout == "weighted")
        readout_delay, delay_choice, readout_weights = delay.delay, delay.to_dict(), delay.weights
        held_out = "calibration images the bias fit did not use" if options.bias != "none" else "held-out calibration images"
        by = "the least squared error of the mean readout against the ANN's output" if delay.criterion == "output-mse" else "the most agreement with the ANN's class"
        k = delay.delay
        report.notes.append(f"readout delay {k} step(s), chosen at T={options.T} by {by} on {delay.samples} {held_out} "
                            f"(squared error {delay.output_mse[k]:.4g} vs {delay.output_mse[0]:.4g} without; agreement {100 * delay.agreement[k]:.1f}% vs {100 * delay.agreement[0]:.1f}%)")
        if delay.weights:
            report.notes.append(f"readout at T={options.T}: per-step weights fitted by least squares on the same images (squared error {delay.weighted_mse:.4g} vs the delay's {delay.output_mse[k]:.4g}); other T read after the delay")
    elif options.readout_delay:
        readout_delay = int(options.readout_delay)
    calibration = Calibration(T=options.T, method=calibration_method(options.to_dict()), readout_delay=readout_delay, delay_choice=delay_choice, bias_fit=bias_fit,
                              readout_weights=readout_weights)
    if options.finetune_epochs:
        from .finetune import finetune_to_ann

        assert options.T is not None
        snn.record = record.replace(calibration=calibration)  # the readout the training matches
        images = torch.cat(kept + choice + others)  # every calibration image
        tuned = finetune_to_ann(snn, images, options.T, options.finetune_epochs, options.finetune_lr)
        calibration = dataclasses.replace(calibration, finetune=tuned.to_dict())
        if tuned.kept:
            report.notes.append(f"fine-tuned the SNN's weights to the ANN's outputs for {tuned.epochs} epoch(s) on {tuned.samples} calibration images at T={options.T} "
                                f"(readout squared error {tuned.initial_loss:.4g} -> {tuned.final_loss:.4g}; the readout delay was chosen before)")
        else:
            report.notes.append(f"fine-tuning did not lower the readout error ({tuned.initial_loss:.4g} -> {tuned.final_loss:.4g} after {tuned.epochs} epoch(s) at learning rate {tuned.lr:g}): "
                                "the calibrated weights were kept (try a smaller --finetune-lr)")
    if options.refit_classifier:
        from .classifier_refit import classifier_name, refit_classifier

        assert options.T is not None
        if classifier_name(snn) is None:
            report.notes.append("classifier not refitted: the network's output is not a linear layer's, so the readout is not linear in one layer's input")
        else:
            refit = refit_classifier(snn, torch.cat(kept + choice + others), options.T, readout_delay=readout_delay, readout_weights=readout_weights)  # every calibration image
            calibration = dataclasses.replace(calibration, classifier_refit=refit.to_dict())
            report.notes.append(f"classifier {refit.layer} refitted to the ANN's logits by ridge least squares on {refit.samples} calibration images at T={options.T} "
                                f"(readout squared error {refit.mse_before:.4g} -> {refit.mse_after:.4g}; agreement with the ANN's class {100 * refit.agreement_before:.1f}% -> {100 * refit.agreement_after:.1f}%)")
    snn.to("cpu")
    snn.record = record.replace(calibration=calibration, report=report.to_dict())  # the final report, once
    return snn, report


def _activation_sizes(module: nn.Module, input_shape: tuple[int, ...]) -> list[int]:
    from .shape_prop import propagate_shapes

    propagate_shapes(module, torch.zeros(1, *input_shape))
    sizes = []
    for node in module.graph.nodes:  # type: ignore[union-attr]
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            sizes.append(int(torch.Size(meta.shape[1:]).numel()))
    return sizes
