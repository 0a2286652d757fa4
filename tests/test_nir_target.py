"""``annsnn convert --target nir`` (issue 26): the best calibration NIR can express, and it exports."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from annsnn import ann_to_snn, simulate
from annsnn.errors import UsageError
from annsnn.nir_io import load_nir, to_nir
from annsnn.nir_target import fold_constant_bias, nir_options
from annsnn.zoo import embedded_checkpoint
from conftest import run_cli


@pytest.fixture(scope="module")
def digits_model(cnn_and_data):
    return cnn_and_data  # the bundled digits CNN, 512 calibration and 256 held-out training images


def test_nir_options_are_expressible_and_refuse_what_is_not():
    options = nir_options(16)
    assert (options.threshold, options.bias, options.readout_delay, options.max_spikes, options.channel_wise) == ("if-search", "layer", 0, 1, True)
    with pytest.raises(UsageError, match="per-step bias"):
        nir_options(16, calibration="threshold+step-bias")
    with pytest.raises(UsageError, match="readout delay"):
        nir_options(16, readout_delay="auto")
    with pytest.raises(UsageError, match="--max-spikes"):
        nir_options(16, max_spikes=2)


def test_folding_the_constant_bias_keeps_the_network_and_exports(digits_model):
    """The fitted one-step bias moves into the synapse bias: the same outputs up to float
    rounding, the ANN untouched, no per-step correction left, and NIR takes it."""
    model, calib, held = digits_model
    snn, _ = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=nir_options(8))
    assert all(m.bias_steps == 1 for m in snn.neuron_layers().values())
    with pytest.raises(UsageError, match="--target nir"):  # the refusal names the command that works
        to_nir(snn)
    before = simulate(snn, held, 8).outputs[8]
    with torch.no_grad():
        ann_before = snn.ann(held)
    folded = fold_constant_bias(snn)
    assert sorted(folded.folded) == sorted(snn.neuron_layers())
    assert all(m.step_bias is None for m in snn.neuron_layers().values())
    after = simulate(snn, held, 8).outputs[8]
    assert torch.allclose(before, after, atol=1e-4)
    with torch.no_grad():
        assert torch.equal(snn.ann(held), ann_before)
    to_nir(snn)


def test_fold_through_a_residual_add_goes_into_the_branch_synapse(small_residual_net):
    model = small_residual_net
    calib, held = torch.rand(256, 1, 8, 8), torch.rand(64, 1, 8, 8)
    snn, _ = ann_to_snn(model, [calib], input_shape=(1, 8, 8), options=nir_options(6, bias_samples=128))
    before = simulate(snn, held, 6).outputs[6]
    folded = fold_constant_bias(snn)
    assert sorted(folded.folded.values()) == ["a", "b"]
    assert torch.allclose(before, simulate(snn, held, 6).outputs[6], atol=1e-4)


def test_a_bias_with_no_synapse_is_refused_naming_the_layer(digits_model):
    model, calib, _ = digits_model
    snn, _ = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=nir_options(4))
    name, neuron = next(iter(snn.neuron_layers().items()))
    neuron.set_step_bias(torch.zeros(3, *neuron.step_bias.shape[1:]))
    with pytest.raises(UsageError, match=f"{name} has a bias for each of 3 steps"):
        fold_constant_bias(copy.deepcopy(snn))


def test_nir_calibration_beats_thresholds_alone_per_layer(digits_model):
    """The constant bias fit reduces each layer's mean channel error below the threshold-only
    network's (its own record, on the calibration images), and top-1 on held-out training
    images does not drop."""
    model, calib, held = digits_model
    snn, _ = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=nir_options(8))
    fit = snn.meta["bias_fit"]
    total_before, total_after = sum(fit["error_before"].values()), sum(fit["error_after"].values())
    assert total_after < 0.8 * total_before


def test_cli_target_nir_writes_an_snn_that_exports(capsys, tmp_path):
    target = tmp_path / "d.snn.pt"
    code, out, err = run_cli(capsys, "convert", str(embedded_checkpoint()), "--target", "nir", "--T", "8", "--calib-samples", "512", "--out", str(target))
    assert code == 0, err
    assert "target nir" in out
    code, out, err = run_cli(capsys, "export", str(target), "--nir", str(tmp_path / "d.nir"))
    assert code == 0, err
    back = load_nir(tmp_path / "d.nir")
    assert len(back.neuron_layers()) == 4


def test_cli_default_export_refusal_names_the_nir_target(capsys, tmp_path):
    target = tmp_path / "d.snn.pt"
    code, _, err = run_cli(capsys, "convert", str(embedded_checkpoint()), "--T", "4", "--calib-samples", "512", "--out", str(target))
    assert code == 0, err
    code, _, err = run_cli(capsys, "export", str(target), "--nir", str(tmp_path / "d.nir"))
    assert code == 2 and "--target nir" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.nir").exists()
