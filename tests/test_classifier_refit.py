"""The classifier refit (``--refit-classifier``, on with ``--target nir``): the ridge fit and
its leave-one-out error against numpy, the refitted SNN's readout against an independent
computation, and the CLI."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from annsnn import ann_to_snn, simulate
from annsnn.artifact import load_snn, save_snn
from annsnn.classifier_refit import classifier_name, leave_one_out_error, refit_classifier, ridge_refit
from annsnn.conversion_options import ConversionOptions
from annsnn.errors import UsageError
from annsnn.nir_io import to_nir
from annsnn.nir_target import fold_constant_bias, nir_options
from conftest import run_cli


def _numpy_ridge(F, m, Y, A0, c0, ridge):
    """The same fit as stacked least squares: rows [F_i, m] -> y_i, and rows
    sqrt(lam) e_j -> sqrt(lam) A0[:, j] for each feature j (lam = ridge * sum F^2 / width)."""
    n, width = F.shape
    lam = ridge * (F**2).sum() / width
    X = np.hstack([F, np.full((n, 1), m)])
    P = np.hstack([np.sqrt(lam) * np.eye(width), np.zeros((width, 1))])
    rows = np.vstack([X, P])
    rhs = np.vstack([Y, np.sqrt(lam) * A0.T])
    sol, *_ = np.linalg.lstsq(rows, rhs, rcond=None)
    return sol[:width].T, sol[width]


def _problem(seed: int, n: int = 40, width: int = 6, classes: int = 3):
    rng = np.random.default_rng(seed)
    F = rng.poisson(3.0, size=(n, width)).astype(np.float64)
    F[:, 0] = 0.0  # a feature that never fired: the ridge keeps its converted weight
    Y = rng.normal(size=(n, classes)) * 4
    A0, c0 = rng.normal(size=(classes, width)), rng.normal(size=classes)
    return F, 8.0, Y, A0, c0


@pytest.mark.parametrize("ridge", [1e-4, 1e-2, 1.0])
def test_ridge_fit_equals_numpy_stacked_least_squares(ridge):
    F, m, Y, A0, c0 = _problem(0)
    A, c = ridge_refit(torch.tensor(F), m, torch.tensor(Y), torch.tensor(A0), torch.tensor(c0), ridge)
    A_np, c_np = _numpy_ridge(F, m, Y, A0, c0, ridge)
    np.testing.assert_allclose(A.numpy(), A_np, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(c.numpy(), c_np, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(A.numpy()[:, 0], A0[:, 0], atol=1e-10)  # no data for feature 0: pulled all the way back


def test_leave_one_out_error_equals_refitting_without_each_image():
    F, m, Y, A0, c0 = _problem(1, n=25)
    ridge = 1e-2
    lam = ridge * (F**2).sum() / F.shape[1]  # the penalty of the full fit, kept fixed for every left-out fit
    errors = []
    for i in range(len(F)):
        keep = np.arange(len(F)) != i
        scale = lam / (ridge * (F[keep] ** 2).sum() / F.shape[1])  # the same lam from the n - 1 images
        A, c = _numpy_ridge(F[keep], m, Y[keep], A0, c0, ridge * scale)
        errors.append(((F[i] @ A.T + m * c - Y[i]) ** 2).sum())
    got = leave_one_out_error(torch.tensor(F), m, torch.tensor(Y), torch.tensor(A0), torch.tensor(c0), ridge)
    assert got == pytest.approx(float(np.mean(errors)), rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), ridge=st.sampled_from([1e-4, 1e-3, 1e-2, 1e-1, 1.0]))
def test_the_fit_never_raises_the_squared_error_on_its_images(seed, ridge):
    """The objective at the solution is at most its value at (A0, c0), which is A0's plain error."""
    F, m, Y, A0, c0 = _problem(seed)
    A, c = ridge_refit(torch.tensor(F), m, torch.tensor(Y), torch.tensor(A0), torch.tensor(c0), ridge)
    after = ((F @ A.numpy().T + m * c.numpy() - Y) ** 2).sum()
    before = ((F @ A0.T + m * c0 - Y) ** 2).sum()
    assert after <= before * (1 + 1e-12)


@pytest.fixture(scope="module")
def digits_model(cnn_and_data):
    model, calib, _ = cnn_and_data  # the bundled digits CNN behind its normalization
    return model, calib[:384]


def _readout_error(snn, images, T):
    """mean_i ||readout_i - T a_i||^2 from simulate and the ANN, computed here (delay 0)."""
    with torch.no_grad():
        out = simulate(snn, images, T, readout_delay=0).outputs[T].double().numpy()
        ann = snn.ann(images).double().numpy()
    return float(((out - T * ann) ** 2).sum(1).mean())


def test_nir_target_refits_the_classifier_the_simulation_reads(digits_model, tmp_path):
    """--target nir's options refit: the record's error after the fit is what simulate's
    readout gives (so the runner reads the new weights), below the error of the same
    conversion without the refit; it exports to NIR and survives save/load."""
    model, calib = digits_model
    T = 4
    options = nir_options(T)
    assert options.refit_classifier and not ConversionOptions().refit_classifier
    snn, report = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=options)
    plain, _ = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=dataclasses.replace(options, refit_classifier=False))
    refit = snn.record.calibration.classifier_refit
    assert refit is not None and plain.record.calibration.classifier_refit is None
    assert refit["samples"] == 384 and refit["T"] == T and refit["layer"] == classifier_name(snn)
    assert refit["mse_before"] == pytest.approx(_readout_error(plain, calib, T), rel=1e-4)
    assert refit["mse_after"] == pytest.approx(_readout_error(snn, calib, T), rel=1e-4)
    assert refit["mse_after"] < refit["mse_before"]
    assert refit["leave_one_out"][f"{refit['ridge']:g}"] == min(refit["leave_one_out"].values())
    assert any("refitted to the ANN's logits" in note for note in report.notes)
    fold_constant_bias(snn)
    to_nir(snn)  # plain weights: NIR takes them
    path = tmp_path / "refit.snn.pt"
    save_snn(snn, path)
    again = load_snn(path)
    assert again.record.calibration.classifier_refit == refit
    assert torch.equal(again.graph.get_submodule(refit["layer"]).weight, snn.graph.get_submodule(refit["layer"]).weight)


def test_weighted_readout_refit_matches_its_weighted_sum(digits_model):
    """With --readout weighted the features are summed with the readout's weights, which
    were fitted so that the sum approximates the ANN's logits a themselves: the refit's
    target is a (it was m a, m = sum of the weights, so the refit moved the readout away
    from a while its note reported the error halved). The errors before and after are the
    weighted readout's against a, as simulate gives it at T = N, with and without the refit."""
    model, calib = digits_model
    T = 4
    options = ConversionOptions.low_latency(T, refit_classifier=True, bias_samples=128, delay_samples=128)
    snn, _ = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=options)
    plain, _ = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=dataclasses.replace(options, refit_classifier=False))
    weights = snn.record.calibration.readout_weights
    assert len(weights) == T and weights == plain.record.calibration.readout_weights and abs(sum(weights) - 1.0) > 0.01
    refit = snn.record.calibration.classifier_refit

    def error(net):
        with torch.no_grad():
            out = simulate(net, calib, T).outputs[T].double().numpy()
            ann = net.ann(calib).double().numpy()
        return float(((out - ann) ** 2).sum(1).mean())

    assert refit["mse_after"] == pytest.approx(error(snn), rel=1e-4)
    assert refit["mse_before"] == pytest.approx(error(plain), rel=1e-4)
    assert refit["mse_after"] <= refit["mse_before"]


def test_a_network_whose_output_is_not_a_linear_layer_is_not_refitted_and_says_so():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.rand(32, 1, 6, 6)
    snn, report = ann_to_snn(net, [x], input_shape=(1, 6, 6), options=nir_options(4))
    assert classifier_name(snn) is None
    assert snn.record.calibration.classifier_refit is None
    assert any("classifier not refitted" in note for note in report.notes)
    with pytest.raises(UsageError, match="not a linear layer"):
        refit_classifier(snn, x, 4)


def test_refit_needs_a_latency():
    with pytest.raises(UsageError, match="--refit-classifier"):
        ConversionOptions.plain(refit_classifier=True)


def test_cli_target_nir_refits_and_the_flag_turns_it_off(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "convert", "--target", "nir", "--T", "4", "--calib-samples", "256", "--out", "on.snn.pt")
    assert code == 0, out + err
    assert "refitted to the ANN's logits" in out
    code, out, err = run_cli(capsys, "convert", "--target", "nir", "--T", "4", "--calib-samples", "256", "--no-refit-classifier", "--out", "off.snn.pt")
    assert code == 0, out + err
    assert "refitted" not in out
    assert load_snn(tmp_path / "on.snn.pt").record.calibration.classifier_refit is not None
    assert load_snn(tmp_path / "off.snn.pt").record.calibration.classifier_refit is None
    code, out, err = run_cli(capsys, "convert", "--calibration", "none", "--refit-classifier", "--out", "bad.snn.pt")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and "--refit-classifier" in lines[0], err
    assert not (tmp_path / "bad.snn.pt").exists()


def test_a_classifier_applied_per_position_is_refused_in_one_line():
    """A final linear layer over [B, positions, features] is not one readout per image."""
    torch.manual_seed(0)

    class PerPosition(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 1)
            self.act = nn.ReLU()
            self.head = nn.Linear(5, 3)

        def forward(self, x):
            return self.head(self.act(self.conv(x)))

    net = PerPosition().eval()
    x = torch.rand(16, 2, 5)
    options = ConversionOptions.low_latency(4, readout_delay=0, channel_wise=False)  # one scale per layer: the head reads every position alike
    snn, _ = ann_to_snn(net, [x], input_shape=(2, 5), options=options)
    if classifier_name(snn) is None:
        pytest.skip("canonicalization put an op after the head")
    with pytest.raises(UsageError, match="--no-refit-classifier"):
        refit_classifier(snn, x, 4)
