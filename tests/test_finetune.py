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
    # the delay readout, which _readout_error reads (the default at N <= 8 is weighted: tested below)
    snn, _ = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=ConversionOptions.low_latency(N, readout="delay"))
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
    assert record.calibration.finetune["samples"] == 1024  # every calibration image (--calib-samples), not only the bias and delay ones
    assert record.calibration.finetune["final_loss"] < record.calibration.finetune["initial_loss"]


def test_a_diverging_training_keeps_the_calibrated_weights(converted):
    """A learning rate of 1 makes the readout error grow: the weights before are restored
    (state bit for bit), and the record says so."""
    snn, calib, _ = converted
    tuned = copy.deepcopy(snn)
    result = finetune_to_ann(tuned, calib[:128], N, epochs=2, lr=1.0)
    assert not result.kept and not result.final_loss < result.initial_loss
    for (name, a), (_, b) in zip(snn.graph.state_dict().items(), tuned.graph.state_dict().items()):
        assert torch.equal(a, b), name
    assert result.to_dict()["kept"] is False


def test_burst_neurons_are_trained_as_they_run(cnn_and_data):
    """--max-spikes 2: the error simulate measures on the trained SNN is the one training reports."""
    model, calib, _ = cnn_and_data
    snn, _ = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=ConversionOptions.low_latency(N, max_spikes=2))
    result = finetune_to_ann(snn, calib[:256], N, epochs=2, lr=1e-3)
    assert result.kept
    assert _readout_error(snn, calib[:256]) == pytest.approx(result.final_loss, rel=1e-4)


def test_weighted_readout_is_what_training_matches(cnn_and_data):
    model, calib, _ = cnn_and_data
    snn, _ = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=ConversionOptions.low_latency(N, readout="weighted"))
    result = finetune_to_ann(snn, calib[:256], N, epochs=1, lr=1e-3)
    w = torch.tensor(snn.record.calibration.readout_weights)
    with torch.no_grad():
        snn.reset()
        out = torch.einsum("t,tbc->bc", w, snn(calib[:256], T=N))
        error = float(((out - snn.ann(calib[:256])) ** 2).mean())
    assert error == pytest.approx(result.final_loss if result.kept else result.initial_loss, rel=1e-4)


def test_the_record_is_written_only_when_trained_and_validated_on_load(converted):
    from annsnn.record import SnnRecord

    snn, _, _ = converted
    assert "finetune" not in snn.record.to_dict()["calibration"] and "finetune" not in snn.record.meta()
    good = {"epochs": 1, "lr": 1e-4, "samples": 8, "parameters": 10, "loss": [1.0], "initial_loss": 2.0, "final_loss": 1.0, "kept": True}
    data = snn.record.to_dict()
    for bad in ({**good, "epochs": "x"}, {**good, "kept": 1}, {**good, "loss": ["a"]}, {**good, "loss": 3.0}, {**good, "loss": None}, {**good, "extra": 1}, {**good, "initial_loss": float("inf")}):
        data["calibration"] = {**data["calibration"], "finetune": bad}
        with pytest.raises(UsageError, match="SNN file refused"):
            SnnRecord.from_dict(data)
    data["calibration"] = {**data["calibration"], "finetune": good}
    assert SnnRecord.from_dict(data).calibration.finetune == good


def test_nir_target_with_finetuning_still_exports(capsys, tmp_path):
    """Fine-tuned weights are plain weights: --target nir --finetune-epochs converts, folds its
    constant bias, and 'annsnn export --nir' takes the result."""
    pytest.importorskip("nir")
    snn_path, nir_path = tmp_path / "n.snn.pt", tmp_path / "n.nir"
    code, stdout, stderr = run_cli(capsys, "convert", str(embedded_checkpoint()), "--T", "4", "--target", "nir", "--finetune-epochs", "1", "--out", str(snn_path))
    assert code == 0, stderr
    code, stdout, stderr = run_cli(capsys, "export", str(snn_path), "--nir", str(nir_path))
    assert code == 0, stderr
    assert nir_path.is_file()
