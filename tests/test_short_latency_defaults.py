"""The default at N <= 8: the weighted readout and 768 bias images (of the default 1,024).

Measured on held-out training images of ResNet-20-JPEG (docs/low-latency.md): the weighted
readout +0.66 / +0.96 points at N = 4 / 8 and +0.02 at N = 16; 768 bias images instead of
256 +0.43 at N = 8. Above N = 8 the default stays the delay readout and 256 bias images.
"""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from annsnn.artifact import load_snn
from annsnn.conversion_options import ConversionOptions
from annsnn.zoo import embedded_checkpoint

from conftest import run_cli


def _expected(T: int, calib: int) -> tuple[str, int]:
    """The rule written out on its own: (readout, bias images of ``calib`` calibration images)."""
    if T > 8:
        return "delay", min(256, calib)
    return "weighted", min(768, max(256, calib - 256), calib)


@settings(max_examples=80, deadline=None)
@given(T=st.integers(1, 64), calib=st.integers(1, 6000))
def test_default_options_follow_the_rule(T, calib):
    for options in (ConversionOptions.calibrated("threshold+step-bias", T), ConversionOptions.low_latency(T)):
        assert (options.readout, options.bias_images_of(calib)) == _expected(T, calib)
        assert options.readout_delay == "auto" and options.max_spikes == 1
        assert options.bias_images == 256  # the fewest the bias takes: the CLI's early check


@pytest.mark.parametrize("overrides, expected", [
    (dict(readout="delay"), ("delay", 768)),  # the user's choice wins; the rest of the rule stays
    (dict(bias_samples=100), ("weighted", 100)),
    (dict(readout_delay=2), ("delay", 256)),  # a fixed delay has no images to fit weights on
    (dict(max_spikes=2), ("delay", 256)),  # burst neurons: not measured with the weighted readout
    (dict(threshold_scale=1.0), ("weighted", 768)),
    (dict(bias_yields_to_delay=False), ("weighted", 768)),
])
def test_given_settings_win_and_other_pipelines_keep_the_old_default(overrides, expected):
    options = ConversionOptions.calibrated("threshold+step-bias", 8, **overrides)
    assert (options.readout, options.bias_images_of(1024)) == expected
    if "bias_samples" in overrides:  # an explicit --bias-samples is what the bias takes, however few images follow
        assert options.bias_images_of(400) == 100 and options.bias_images == 100
    if "bias_yields_to_delay" in overrides:  # ... and so does an explicit "do not yield"
        assert options.bias_yields_to_delay is False and options.bias_images_of(700) == 700


@pytest.mark.parametrize("calibration", ["threshold+bias", "threshold", "none"])
def test_other_calibrations_are_unchanged(calibration):
    options = ConversionOptions.calibrated(calibration, 8 if calibration != "none" else None)
    expected_bias = 0 if options.bias == "none" else 256
    assert (options.readout, options.bias_images_of(1024), options.bias_images_of(300)) == ("delay", expected_bias, expected_bias)


def test_cli_default_at_T4_fits_weights_on_the_last_256_and_the_bias_on_768(capsys, tmp_path):
    """The digits CNN (1,437 training images, --calib-samples 1024 by default): the bias fit
    reads 768 images and the delay choice the 256 after them."""
    out, report = tmp_path / "d.snn.pt", tmp_path / "d.json"
    code, stdout, stderr = run_cli(capsys, "convert", "--T", "4", "--out", str(out), "--json", str(report))
    assert code == 0, stderr
    snn = load_snn(out)
    calibration = snn.record.calibration
    assert len(calibration.readout_weights) == 4
    assert calibration.bias_fit["samples"] == 768
    assert calibration.delay_choice["samples"] == 256
    assert json.loads(report.read_text())["readout_weights"] == list(calibration.readout_weights)
    assert "bias fitted for T=4 on 768 calibration images" in stdout


@pytest.mark.parametrize("images, bias", [(1024, 768), (700, 444), (512, 256), (300, 256)])
def test_the_pipeline_splits_small_calibration_sets_between_bias_and_delay(cnn_and_data, images, bias):
    """The first ``bias`` images go to the bias fit and the next ones (up to 256) to the
    delay choice: the delay keeps its 256 while the bias has more than 256."""
    from annsnn.data import load_dataset
    from annsnn.pipeline import ann_to_snn

    model, calib, _ = cnn_and_data
    pool = load_dataset("digits", "train").tensors[0][:images]  # 1,437 training images
    snn, _ = ann_to_snn(model, list(pool.split(128)), input_shape=tuple(calib.shape[1:]), options=ConversionOptions.low_latency(4))
    calibration = snn.record.calibration
    assert calibration.bias_fit["samples"] == bias
    assert calibration.delay_choice["samples"] == min(256, images - bias)
    assert len(calibration.readout_weights) == 4
    assert snn.record.options["bias_yields_to_delay"] is True and snn.record.options["bias_samples"] == 768


def test_the_split_gives_the_bias_the_first_images_and_the_delay_the_next(cnn_and_data):
    """700 images: the default (yielding) equals an explicit --bias-samples 444, which fits
    the bias on images [0:444] and chooses the delay and its weights on [444:700], bit for bit."""
    from annsnn.data import load_dataset
    from annsnn.pipeline import ann_to_snn

    model, calib, _ = cnn_and_data
    pool = load_dataset("digits", "train").tensors[0][:700]
    shape = tuple(calib.shape[1:])
    yielding, _ = ann_to_snn(model, list(pool.split(128)), input_shape=shape, options=ConversionOptions.low_latency(4))
    explicit, _ = ann_to_snn(model, list(pool.split(128)), input_shape=shape, options=ConversionOptions.low_latency(4, bias_samples=444))
    assert explicit.record.options["bias_samples"] == 444 and "bias_yields_to_delay" not in explicit.record.options
    biases = [(a.step_bias, b.step_bias) for a, b in zip(yielding.neuron_layers().values(), explicit.neuron_layers().values())]
    assert len(biases) >= 2 and all(torch.equal(a, b) for a, b in biases)
    assert yielding.record.calibration.readout_weights == explicit.record.calibration.readout_weights
    assert yielding.record.calibration.readout_delay == explicit.record.calibration.readout_delay
    swapped, _ = ann_to_snn(model, list(torch.cat([pool[444:], pool[:444]]).split(128)), input_shape=shape, options=ConversionOptions.low_latency(4))
    assert not all(torch.equal(a.step_bias, b.step_bias) for a, b in zip(swapped.neuron_layers().values(), yielding.neuron_layers().values()))


def test_nir_refusal_of_the_default_at_T8_names_the_flag_that_works(capsys, tmp_path):
    pytest.importorskip("nir")
    out = tmp_path / "d.snn.pt"
    assert run_cli(capsys, "convert", "--T", "8", "--out", str(out))[0] == 0
    code, _, stderr = run_cli(capsys, "export", str(out), "--nir", str(tmp_path / "d.nir"))
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "--readout delay" in stderr and "--target nir" in stderr and "without --readout weighted" not in stderr


def test_cli_above_T8_and_explicit_flags_keep_the_delay_readout(capsys, tmp_path):
    for args, bias in ((["--T", "16"], 256), (["--T", "4", "--readout", "delay", "--bias-samples", "300"], 300), (["--T", "4", "--readout", "delay", "--calib-samples", "600"], 344)):
        out = tmp_path / "k.snn.pt"
        code, _, stderr = run_cli(capsys, "convert", *args, "--out", str(out))
        assert code == 0, stderr
        calibration = load_snn(out).record.calibration
        assert calibration.readout_weights == () and calibration.bias_fit["samples"] == bias, args
