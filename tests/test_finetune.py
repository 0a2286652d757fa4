"""--finetune-epochs: the SNN's weights trained to the ANN's outputs (annsnn.finetune)."""
from __future__ import annotations

import copy

import pytest
import torch

from annsnn.conversion_options import ConversionOptions
from annsnn.errors import UsageError
from annsnn.finetune import finetune_to_ann
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import readout_start, simulate
from annsnn.zoo import embedded_checkpoint

from conftest import run_cli

N = 4


@pytest.fixture(scope="module")
def converted(cnn_and_data):
    model, calib, held = cnn_and_data
    snn, _ = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=ConversionOptions.low_latency(N))
    return snn, calib, held


def _readout_error(snn, x):
    """The squared error of the SNN's own readout at N against the ANN, from simulate (not
    the twin the training used): the mean output after the delay d."""
    d = readout_start(snn.record.calibration.readout_delay, N, N)
    with torch.no_grad():
        out = simulate(snn, x, N).outputs[N] / (N - d)
        return float(((out - snn.ann(x)) ** 2).mean())


def test_training_lowers_the_readout_error_and_lands_in_the_snn(converted):
    snn, calib, _ = converted
    tuned = copy.deepcopy(snn)
    x = calib[:256]
    result = finetune_to_ann(tuned, x, N, epochs=3, lr=1e-3)
    # the error measured by simulate on the SNN itself equals the one the training reports:
    # the trained weights were copied back into the modules simulate runs
    assert _readout_error(snn, x) == pytest.approx(result.initial_loss, rel=1e-4)
    assert _readout_error(tuned, x) == pytest.approx(result.final_loss, rel=1e-4)
    assert result.final_loss < 0.8 * result.initial_loss and len(result.loss) == 3
    assert result.parameters == sum(p.numel() for n, p in snn.graph.named_parameters() if n.endswith(("weight", "bias")))
    changed = [n for (n, a), (_, b) in zip(snn.graph.named_parameters(), tuned.graph.named_parameters()) if not torch.equal(a, b)]
    assert changed and all(n.endswith(("weight", "bias")) for n in changed)
    for (name, a), (_, b) in zip(snn.graph.named_buffers(), tuned.graph.named_buffers()):  # step biases untouched
        assert torch.equal(a, b), name


def test_zero_epochs_change_nothing(converted):
    snn, calib, _ = converted
    tuned = copy.deepcopy(snn)
    result = finetune_to_ann(tuned, calib[:64], N, epochs=0)
    assert result.loss == [] and result.final_loss == result.initial_loss
    for (_, a), (_, b) in zip(snn.graph.state_dict().items(), tuned.graph.state_dict().items()):
        assert torch.equal(a, b)


def test_options_validate_and_default_files_stay_as_before():
    assert "finetune_epochs" not in ConversionOptions.low_latency(8).to_dict()
    assert ConversionOptions.low_latency(8, finetune_epochs=2).to_dict()["finetune_epochs"] == 2
    for bad in (-1, 1.5, True):
        with pytest.raises(UsageError, match="finetune-epochs"):
            ConversionOptions.low_latency(8, finetune_epochs=bad)
    with pytest.raises(UsageError, match="finetune-lr"):
        ConversionOptions.low_latency(8, finetune_epochs=1, finetune_lr=0.0)
    with pytest.raises(UsageError, match="finetune-epochs"):
        ConversionOptions.calibrated("none", None, finetune_epochs=1)


def test_cli_finetune_records_the_training(capsys, tmp_path):
    from annsnn.artifact import load_snn

    out = tmp_path / "t.snn.pt"
    code, stdout, stderr = run_cli(capsys, "convert", str(embedded_checkpoint()), "--T", "4", "--finetune-epochs", "1", "--out", str(out))
    assert code == 0, stderr
    assert "fine-tuned the SNN's weights" in stdout
    record = load_snn(out).record
    assert record.calibration.finetune["epochs"] == 1 and record.options["finetune_epochs"] == 1
    assert record.calibration.finetune["final_loss"] < record.calibration.finetune["initial_loss"]
