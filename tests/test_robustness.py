"""Robustness to noise and attacks (annsnn.robustness) and the classification metrics."""
from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from annsnn.conversion_options import ConversionOptions
from annsnn.analyzer import Analyzer
from annsnn.data import load_dataset
from annsnn.errors import UsageError
from annsnn.model_files import load_model
from annsnn.metrics import classification_metrics, ranked_classes
from annsnn.pipeline import ann_to_snn
from annsnn.robustness import Robustness, RobustnessSpec, SurrogateSNN, fgsm, gaussian_noise, parse_strengths
from annsnn.simulate import simulate
from annsnn.zoo import embedded_checkpoint
from conftest import table_headings


@pytest.fixture(scope="module")
def digits_snn():
    xtr, _ = load_dataset("digits", "train").tensors
    xte, yte = load_dataset("digits", "test").tensors
    snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [xtr[:256]], input_shape=(1, 8, 8), normalization=([0.3054], [0.3761]), options=ConversionOptions.plain())
    return snn, xte[:240], yte[:240]


def _study(snn, x, y, spec, batch=120):
    study = Robustness(snn, spec)
    for i in range(0, len(x), batch):
        study.run(x[i : i + batch], y[i : i + batch], batch_index=i // batch)
    return study.report()


def test_fgsm_at_zero_equals_clean_accuracy_exactly(digits_snn):
    snn, x, y = digits_snn
    result = _study(snn, x, y, RobustnessSpec(time_steps=(4, 16), fgsm=(0.0, 0.1), attack_on="both", attack_T=4))
    with Analyzer(snn, [4, 16], count=False) as analyzer:  # the evaluate path, independently
        for i in range(0, len(x), 120):
            analyzer.run(x[i : i + 120], y[i : i + 120])
    clean = analyzer.report()
    zero = [r for r in result.rows if r.perturbation == "fgsm" and r.strength == 0.0]
    assert {r.crafted_on for r in zero} == {"ann", "snn"}
    for row in zero + [result.rows[0]]:
        assert row.ann.top1 == clean.ann.top1
        assert row.ann.f1_macro == clean.ann.f1_macro
        for r in clean.rows:
            assert row.snn[r.T].top1 == r.top1
            assert row.snn[r.T].recall_macro == r.recall_macro
            assert row.agreement[r.T] == r.agreement


def test_accuracy_falls_with_strength_seeded(digits_snn):
    """Monotone in expectation: on 240 digits, a seeded check at a few strengths."""
    snn, x, y = digits_snn
    result = _study(snn, x, y, RobustnessSpec(time_steps=(32,), gaussian=(0.0, 0.2, 0.4), fgsm=(0.0, 0.05, 0.1, 0.2)))
    for kind in ("gaussian", "fgsm"):
        rows = sorted((r for r in result.rows if r.perturbation == kind), key=lambda r: r.strength)
        for net in ("ann", "snn"):
            accs = [r.ann.top1 if net == "ann" else r.snn[32].top1 for r in rows]
            assert all(a >= b for a, b in zip(accs, accs[1:])), (kind, net, accs)
            assert accs[0] - accs[-1] > 0.2, (kind, net, accs)


def test_hand_fgsm_equals_torchattacks(digits_snn):
    torchattacks = pytest.importorskip("torchattacks")
    snn, x, y = digits_snn
    study = Robustness(snn, RobustnessSpec(time_steps=(4,), fgsm=(0.1,)))
    twin = SurrogateSNN(snn, 4)
    for model in (study.ann, twin):
        for eps in (0.0, 0.03, 0.1, 1.0):
            expected = torchattacks.FGSM(model, eps=eps)(x[:64], y[:64])
            assert torch.equal(fgsm(model, x[:64], y[:64], eps), expected)


def test_snn_attack_gradient_is_finite_and_nonzero(digits_snn):
    snn, x, y = digits_snn
    twin = SurrogateSNN(snn, 8)
    images = x[:32].clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(twin(images), y[:32])
    (grad,) = torch.autograd.grad(loss, images)
    assert bool(torch.isfinite(grad).all())
    assert float((grad != 0).float().mean()) > 0.5  # most pixels get a gradient through the spikes
    assert float(grad.abs().sum()) > 0


def test_twin_forward_is_the_simulated_snn(digits_snn):
    """The differentiable twin runs the same IF dynamics: T × its mean output = the readout."""
    snn, x, _ = digits_snn
    with torch.no_grad():
        twin = SurrogateSNN(snn, 16)(x) * 16
    sim = simulate(snn, x, 16).outputs[16]
    torch.testing.assert_close(twin, sim, rtol=0, atol=1e-4)
    assert torch.equal(twin.argmax(1), sim.argmax(1))


def test_twin_of_burst_neurons_is_the_simulated_snn():
    """--max-spikes K: the twin emits sum_k H(v - k) = clip(floor(v), 0, K) spikes per step, as
    IFNeurons does (it emitted at most one before, so attacks on a burst SNN used another net)."""
    xtr, _ = load_dataset("digits", "train").tensors
    xte, _ = load_dataset("digits", "test").tensors
    snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [xtr[:512]], input_shape=(1, 8, 8), normalization=([0.3054], [0.3761]),
                        options=ConversionOptions.low_latency(2, max_spikes=4))
    with torch.no_grad():
        sim = simulate(snn, xte[:120], 2).outputs[2]
        d = snn.record.calibration.readout_delay
        twin = SurrogateSNN(snn, 2)(xte[:120]) * (2 - d)
    torch.testing.assert_close(twin, sim, rtol=0, atol=1e-4)


def test_twin_reads_direct_input_after_a_poisson_simulation(digits_snn):
    """The twin copies the runner, encoder included: after a Poisson simulate the copy kept
    Poisson encoding while the twin set 'direct' on the original, and a reshape failed."""
    snn, x, _ = digits_snn
    with torch.no_grad():
        simulate(snn, x[:8].clamp(0, 1), 4, encoding="poisson", generator=torch.Generator().manual_seed(0))
        twin = SurrogateSNN(snn, 16)(x) * 16
    torch.testing.assert_close(twin, simulate(snn, x, 16).outputs[16], rtol=0, atol=1e-4)


def test_noise_is_seeded_and_zero_noise_is_clean(digits_snn):
    snn, x, _ = digits_snn
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(gaussian_noise(x, 0.1, g()), gaussian_noise(x, 0.1, g()))
    assert torch.equal(gaussian_noise(x, 0.0, g()), x)
    noisy = gaussian_noise(x, 0.5, g())
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1


def test_parse_strengths_range_is_exact():
    values = parse_strengths("0:1:0.05", "--fgsm")
    assert len(values) == 21
    assert values == tuple(round(i * 0.05, 10) for i in range(21))
    assert parse_strengths("0.2,0,0.1", "--noise") == (0.0, 0.1, 0.2)


@pytest.mark.parametrize("kwargs", [dict(fgsm=(-0.1,)), dict(fgsm=(1.5,)), dict(pgd=(2.0,)), dict(gaussian=(-0.01,)), dict(salt_pepper=(1.2,)), dict(attack_on="cw")])
def test_bad_spec_is_a_usage_error(kwargs):
    with pytest.raises(UsageError):
        RobustnessSpec(time_steps=(8,), **kwargs)


def test_metrics_against_a_hand_count():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    pred = torch.tensor([0, 1, 1, 1, 2, 0, 2, 2])
    m = classification_metrics(pred, labels, 4)
    confusion = np.zeros((4, 4), dtype=int)
    for a, b in zip(labels.tolist(), pred.tolist()):
        confusion[a, b] += 1
    assert m.confusion == confusion.tolist()
    tp = np.diag(confusion)
    recall = tp / confusion.sum(1)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros(4), where=confusion.sum(0) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(4), where=(precision + recall) > 0)
    assert m.top1 == 5 / 8
    assert m.recall_macro == pytest.approx(recall.mean(), abs=1e-12)
    assert m.f1_macro == pytest.approx(f1.mean(), abs=1e-12)
    assert m.top5 is None  # fewer than 10 classes


def test_top5_with_ten_classes():
    scores = torch.arange(10, dtype=torch.float32).repeat(4, 1)  # ranking 9, 8, 7, 6, 5, ...
    labels = torch.tensor([9, 5, 4, 0])
    m = classification_metrics(scores.argmax(1), labels, 10, ranked_classes(scores))
    assert m.top1 == 0.25 and m.top5 == 0.5


def _cli(capsys, monkeypatch, cwd, *args):
    from conftest import run_cli

    monkeypatch.chdir(cwd)
    return run_cli(capsys, *args)


@pytest.mark.parametrize("args", [["--fgsm", "-0.1"], ["--fgsm", "1.01"], ["--noise", "-0.1"], ["--fgsm", "0.1", "--attack-on", "deepfool"], ["--pgd", "abc"]])
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, monkeypatch, args):
    code, _, stderr = _cli(capsys, monkeypatch, tmp_path, "robustness", "missing.snn.pt", *args)
    assert code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error:")


def test_cli_robustness_json_csv_plots(tmp_path, capsys, monkeypatch, digits_snn):
    from annsnn.artifact import save_snn

    snn, _, _ = digits_snn
    save_snn(snn, tmp_path / "d.snn.pt")
    code, stdout, stderr = _cli(capsys, monkeypatch, tmp_path, "robustness", "d.snn.pt", "--data", "digits", "--samples", "60", "--T", "4,8", "--noise", "0.1", "--fgsm", "0,0.1", "--attack-on", "both", "--attack-T", "4",
                "--json", "r.json", "--csv", "r.csv", "--plot", "plots")
    assert code == 0, stderr
    data = json.loads((tmp_path / "r.json").read_text())
    kinds = [(r["perturbation"], r["strength"], r["crafted_on"]) for r in data["rows"]]
    assert kinds == [("clean", 0.0, "none"), ("gaussian", 0.1, "none"), ("fgsm", 0.0, "ann"), ("fgsm", 0.1, "ann"), ("fgsm", 0.0, "snn"), ("fgsm", 0.1, "snn")]
    row = data["rows"][0]
    assert sum(map(sum, row["ann"]["confusion"])) == 60 and set(row["snn"]) == {"4", "8"}
    assert "transfer" in row["description"] or row["description"] == "no perturbation"
    crafted = [line.split("│")[3].strip() for line in stdout.splitlines() if line.startswith("│ fgsm")]
    assert crafted == ["ANN", "ANN", "SNN (BPTT)", "SNN (BPTT)"]  # one unwrapped cell per row, in --attack-on order
    assert "crafted_on=ann: white-box on the ANN" in stdout
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["robustness_fgsm_ann.png", "robustness_fgsm_snn.png", "robustness_gaussian.png"]
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + 6 * 3


def test_evaluate_json_has_confusion_and_top5(tmp_path, capsys, monkeypatch, digits_snn):
    from annsnn.artifact import save_snn

    snn, x, y = digits_snn
    save_snn(snn, tmp_path / "d.snn.pt")
    code, stdout, stderr = _cli(capsys, monkeypatch, tmp_path, "evaluate", "d.snn.pt", "--data", "digits", "--samples", "90", "--T", "4,16", "--json", "e.json")
    assert code == 0, stderr
    data = json.loads((tmp_path / "e.json").read_text())
    for block in [data["ann"]] + data["rows"]:
        confusion = np.array(block["confusion"])
        assert confusion.shape == (10, 10) and confusion.sum() == 90
        assert np.trace(confusion) / 90 == pytest.approx(block["top1"], abs=1e-7)  # top-1 is a float32 mean
        assert block["top5"] is not None and block["top5"] >= block["top1"]
    assert table_headings(stdout)[0] == ["T", "top-1 %", "top-5 %", "gap pts", "agree %", "recall macro", "F1 macro", "firing rate"]


def test_pgd_through_torchattacks_is_seeded_and_at_least_as_strong_as_fgsm(digits_snn):
    pytest.importorskip("torchattacks")
    snn, x, y = digits_snn
    spec = RobustnessSpec(time_steps=(16,), fgsm=(0.1,), pgd=(0.1,), pgd_steps=5, seed=1)
    first, second = _study(snn, x[:120], y[:120], spec), _study(snn, x[:120], y[:120], spec)
    pgd = [r for r in first.rows if r.perturbation == "pgd"][0]
    assert pgd.ann.confusion == [r for r in second.rows if r.perturbation == "pgd"][0].ann.confusion  # seeded
    fgsm_row = [r for r in first.rows if r.perturbation == "fgsm"][0]
    assert pgd.ann.top1 <= fgsm_row.ann.top1 < first.rows[0].ann.top1


@pytest.mark.parametrize("spec", [RobustnessSpec(time_steps=(4,), gaussian=(0.1,)), RobustnessSpec(time_steps=(4,), fgsm=(0.05,), attack_on="ann")], ids=["noise", "fgsm"])
def test_labels_beyond_the_models_outputs_are_refused_as_evaluate_does(digits_snn, spec):
    """Labels 10 and 11 against 10 outputs: --noise scored them as wrong (exit 0), --fgsm was
    'internal error (IndexError: Target 10 is out of bounds)'; evaluate and energy refuse them."""
    snn, x, y = digits_snn
    bad = y[:20].clone()
    bad[:2] = torch.tensor([10, 11])
    with pytest.raises(UsageError, match="labels run from 1 to 11, but the model has 10 outputs"):
        Robustness(snn, spec).run(x[:20], bad)
    with pytest.raises(UsageError, match="labels run from 1 to 11, but the model has 10 outputs"):
        with Analyzer(snn, [4], count=False) as analyzer:
            analyzer.run(x[:20], bad)
