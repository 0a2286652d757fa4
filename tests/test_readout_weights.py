"""--readout weighted: per-step readout weights fitted by least squares (annsnn.calibration.
fit_readout_weights), recorded in the SNN, read by simulate at T = N, refused by NIR."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from annsnn.artifact import load_snn, write_snn
from annsnn.calibration import fit_readout_weights
from annsnn.conversion_options import ConversionOptions
from annsnn.errors import UsageError
from annsnn.pipeline import ann_to_snn
from annsnn.record import SnnRecord
from annsnn.robustness import SurrogateSNN
from annsnn.simulate import simulate
from annsnn.zoo import embedded_checkpoint

from conftest import run_cli
from test_calibration import _delay_choice_of

N = 4


@settings(max_examples=30, deadline=None)
@given(steps=st.integers(1, 6), images=st.integers(2, 9), classes=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_weights_are_numpys_least_squares_solution(steps, images, classes, seed):
    """The same problem through numpy.linalg.lstsq on the design matrix [B*C, N]."""
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(steps, images, classes, generator=g, dtype=torch.float64)
    a = torch.randn(images, classes, generator=g, dtype=torch.float64)
    expected = np.linalg.lstsq(o.reshape(steps, -1).T.numpy(), a.reshape(-1).numpy(), rcond=None)[0]
    assert np.allclose(fit_readout_weights(o, a), expected, atol=1e-9)


def test_weights_recover_an_exact_combination():
    g = torch.Generator().manual_seed(1)
    o = torch.randn(5, 40, 10, generator=g, dtype=torch.float64)
    w = torch.tensor([-0.5, 0.0, 0.25, 1.0, 2.0], dtype=torch.float64)
    assert fit_readout_weights(o, torch.einsum("t,tbc->bc", w, o)) == pytest.approx(w.tolist(), abs=1e-12)


def test_delay_choice_fits_weights_on_a_hand_made_case(monkeypatch):
    """ANN (1, 0, 0), (0, 1, 0); o_1 = (3, 0, 0), (0, 3, 0); o_2 = (0.9, 0, 0), (0, 0.4, 0.5).
    Normal equations: G = [[18, 3.9], [3.9, 1.22]], r = (6, 1.3), det 6.75:
    w_1 = (6 * 1.22 - 3.9 * 1.3) / 6.75 = 1/3, w_2 = (18 * 1.3 - 3.9 * 6) / 6.75 = 0, and
    (1/3) o_1 is the ANN's output exactly: squared error 0 (the delays': 0.2425, 0.1033)."""
    ann = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    steps = [torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]]), torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.4, 0.5]])]
    plain = _delay_choice_of(monkeypatch, ann, steps)
    assert plain.weights == () and "weights" not in plain.to_dict()  # not asked: the record is as before
    chosen = _delay_choice_of(monkeypatch, ann, steps, fit_weights=True)
    assert chosen.weights == pytest.approx((1 / 3, 0.0), abs=1e-7)
    assert chosen.weighted_mse == pytest.approx(0.0, abs=1e-12) and chosen.delay == 1
    assert chosen.to_dict()["weights"] == list(chosen.weights)


@pytest.fixture(scope="module")
def weighted(cnn_and_data):
    model, calib, held = cnn_and_data
    options = ConversionOptions.low_latency(N, readout="weighted")
    snn, report = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=options)
    return snn, report, held


def test_simulate_reads_the_weighted_sum_at_N_and_the_delay_elsewhere(weighted):
    snn, report, held = weighted
    w = snn.record.calibration.readout_weights
    choice = snn.record.calibration.delay_choice
    assert len(w) == N and list(w) == choice["weights"]
    # least squares over all weightings: no delay's 0/1 weighting fits the choice images better
    assert choice["weighted_mse"] <= min(choice["output_mse"]) + 1e-12
    assert any("per-step weights" in note for note in report.notes)
    x = held[:64]
    snn.reset()
    steps = snn(x, T=N)  # the per-step output currents, step by step from the module
    expected = steps[0] * w[0]
    for t in range(1, N):
        expected = expected + steps[t] * w[t]
    result = simulate(snn, x, [2, N])
    assert result.readout_weights == w
    assert torch.allclose(result.outputs[N], expected, atol=1e-5)
    for chunk in (1, 3):  # steps split across chunks: the same weighted sum
        assert torch.allclose(simulate(snn, x, [2, N], chunk=chunk).outputs[N], expected, atol=1e-5), chunk
    assert simulate(snn, x, [2, N + 1]).readout_weights == ()  # N not asked for: no weights anywhere
    k = snn.record.calibration.readout_delay
    delayed = simulate(snn, x, [2, N], readout_delay=k)  # a delay given: every T after it
    assert torch.equal(result.outputs[2], delayed.outputs[2])
    assert torch.allclose(delayed.outputs[N], steps[k:].sum(0), atol=1e-5)
    assert not torch.allclose(result.outputs[N], delayed.outputs[N])
    assert torch.allclose(SurrogateSNN(snn, N)(x), expected, atol=1e-4)  # the attacks' twin reads the same


def test_weights_survive_save_and_load(weighted, tmp_path):
    snn, _, held = weighted
    path = tmp_path / "w.snn.pt"
    with open(path, "wb") as handle:
        write_snn(snn, handle)
    loaded = load_snn(path)
    assert loaded.record.calibration.readout_weights == snn.record.calibration.readout_weights
    assert torch.equal(simulate(loaded, held[:16], N).outputs[N], simulate(snn, held[:16], N).outputs[N])


_CRAFTED = [[float("nan"), 1.0, 1.0, 1.0], ["1", 1.0, 1.0, 1.0], [1.0, 1.0], "1,1,1,1", [True, 1.0, 1.0, 1.0], [1e300, 1.0, 1.0, 1.0]]


@pytest.mark.parametrize("bad", _CRAFTED)
def test_crafted_weights_are_refused(weighted, bad):
    """Both readers: the format-1 meta dict and the record dict that files are written as
    (1e300 is finite, but ``out * 1e300`` is inf in float32)."""
    snn, _, _ = weighted
    meta = dict(snn.record.meta())
    meta["readout_weights"] = bad
    with pytest.raises(UsageError, match="SNN file refused"):
        SnnRecord.from_meta(meta)
    data = snn.record.to_dict()
    data["calibration"] = {**data["calibration"], "readout_weights": bad}
    with pytest.raises(UsageError, match="SNN file refused"):
        SnnRecord.from_dict(data)


def test_records_without_weights_are_written_as_before(cnn_and_data):
    """No ``readout_weights`` key anywhere in a default SNN's record: its file is byte for
    byte what the code before --readout wrote (which refuses unknown keys)."""
    model, calib, _ = cnn_and_data
    snn, _ = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=ConversionOptions.low_latency(N, readout="delay"))
    assert "readout_weights" not in snn.record.to_dict()["calibration"]
    assert "readout_weights" not in snn.record.meta() and "weights" not in snn.record.calibration.delay_choice


def test_nir_refuses_weighted_readout(weighted):
    from annsnn.nir_io import to_nir

    pytest.importorskip("nir")
    with pytest.raises(UsageError, match="readout weights"):
        to_nir(weighted[0])


def test_options_refuse_weights_without_an_automatic_delay():
    with pytest.raises(UsageError, match="readout weighted"):
        ConversionOptions.low_latency(8, readout="weighted", readout_delay=2)
    with pytest.raises(UsageError, match="readout"):
        ConversionOptions.low_latency(8, readout="sometimes")
    assert "readout" not in ConversionOptions.low_latency(16).to_dict()  # the default's files above N = 8 are as before
    assert "readout" not in ConversionOptions.low_latency(8, readout="delay").to_dict()
    assert ConversionOptions.low_latency(8).to_dict()["readout"] == "weighted"  # the default at N <= 8 (test_short_latency_defaults.py)
    assert dataclasses.replace(ConversionOptions.low_latency(16), readout="weighted").to_dict()["readout"] == "weighted"


def test_cli_readout_weighted(capsys, tmp_path):
    out, report = tmp_path / "w.snn.pt", tmp_path / "w.json"
    code, stdout, _ = run_cli(capsys, "convert", str(embedded_checkpoint()), "--T", "4", "--readout", "weighted", "--out", str(out), "--json", str(report))
    assert code == 0 and "fitted per-step weights" in stdout
    assert len(load_snn(out).record.calibration.readout_weights) == 4
    import json

    assert json.loads(report.read_text())["readout_weights"] == list(load_snn(out).record.calibration.readout_weights)
    for extra in (["--readout-delay", "2"], ["--target", "nir"]):
        target = tmp_path / "refused.snn.pt"
        code, stdout, stderr = run_cli(capsys, "convert", str(embedded_checkpoint()), "--T", "4", "--readout", "weighted", *extra, "--out", str(target))
        assert code == 2 and not target.exists(), extra
        assert len(stderr.strip().splitlines()) == 1 and "readout" in stderr and "Traceback" not in stderr
