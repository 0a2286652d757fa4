"""A new user's first hour (issue 29): results name their SNN, "not counted" is None,
break-even T is a typed value with one wording, the last conversion is per directory."""
import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from annsnn import Analyzer, ann_to_snn
from annsnn.energy import BreakEven, BreakEvenKind, break_even
from annsnn.errors import UsageError
from conftest import run_cli
from annsnn.zoo import embedded_checkpoint


def _tiny_snn():
    """Identity Linear(5,5) -> IF -> Linear(5,3): the pattern's 3 ones spike at every step,
    so the IF layer's firing rate is exactly 3/5 at every T."""
    from annsnn.conversion_options import ConversionOptions
    from annsnn.modes import parse_mode

    pattern = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    first = nn.Linear(5, 5)
    with torch.no_grad():
        first.weight.copy_(torch.eye(5))
        first.bias.zero_()
    model = nn.Sequential(first, nn.ReLU(), nn.Linear(5, 3, bias=False)).eval()
    options = ConversionOptions.plain(parse_mode("max"))
    snn, _ = ann_to_snn(model, [pattern], input_shape=(5,), options=options)
    return snn, pattern


@pytest.mark.parametrize("count", [True, False])
def test_firing_rates_are_measured_and_not_counted_is_none(count):
    snn, pattern = _tiny_snn()
    with Analyzer(snn, [4, 8], count=count) as a:
        a.run(pattern)
    r = a.report()
    (layer,) = snn.neuron_layers()
    assert r.firing_rates == {layer: {"4": 0.6, "8": 0.6}}
    assert [row.firing_rate for row in r.rows] == [0.6, 0.6]
    if count:
        assert r.rows[1].synaptic_acs == 8 * 3 * 3 and r.counted
        assert r.break_even_T["45nm-fp32"] == BreakEven(BreakEvenKind.AT, 5)
    else:  # not counted: None, never 0
        assert not r.counted and r.break_even_T is None
        for row in r.rows:
            assert (row.synaptic_acs, row.macs, row.bias_acs, row.neuron_updates, row.active_updates, row.comparisons, row.total_ops) == (None,) * 7
            assert row.energy_pj is None and row.energy_ratio is None
        assert json.loads(json.dumps(r.to_dict()))["rows"][0]["synaptic_acs"] is None


def test_break_even_is_one_typed_value_with_one_wording():
    assert break_even([1.0, 2.0, 3.0], 2.5) == BreakEven(BreakEvenKind.AT, 2)
    assert break_even([1.0, 2.0, 3.0], 9.0) == BreakEven(BreakEvenKind.BEYOND, 3)
    assert break_even([1.0, 2.0, 3.0], 0.5) == BreakEven(BreakEvenKind.NEVER)
    assert break_even([1.0, 2.0, 3.0], None) == BreakEven(BreakEvenKind.NO_REFERENCE)
    assert [str(b) for b in (break_even([1.0, 2.0], 1.5), break_even([1.0], 5.0), break_even([1.0], 0.1), break_even([1.0], None))] == [
        "T=1", "T>=1 (cheaper at every simulated T)", "never cheaper", "no ANN reference"]
    assert BreakEven(BreakEvenKind.NEVER).to_json() == {"kind": "never", "T": None}
    with pytest.raises(ValueError):
        BreakEven(BreakEvenKind.AT)
    with pytest.raises(ValueError):
        BreakEven(BreakEvenKind.NEVER, 3)


def test_accuracies_are_exact_fractions_not_float32():
    snn, pattern = _tiny_snn()
    x = pattern.repeat(9, 1)
    labels = torch.tensor([0] * 7 + [1, 2])
    with Analyzer(snn, [2], count=False) as a:
        a.run(x, labels)
    r = a.report()
    predicted = int(snn.ann(x).argmax(1)[0])
    assert r.ann.top1 == sum(int(v == predicted) for v in labels.tolist()) / 9  # a float64 fraction, bit for bit


def test_the_last_conversion_is_remembered_per_directory(tmp_path):
    from annsnn.workspace import last_snn, remember_last_snn

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "mine.snn.pt").write_bytes(b"x")
    (b / "demo.snn.pt").write_bytes(b"y")
    remember_last_snn(a / "mine.snn.pt", directory=a)
    with pytest.raises(UsageError, match="none converted from this directory"):
        last_snn(directory=b)
    remember_last_snn(b / "demo.snn.pt", directory=b)  # another shell, another directory
    assert last_snn(directory=a) == (a / "mine.snn.pt").resolve()
    assert last_snn(directory=b) == (b / "demo.snn.pt").resolve()


@pytest.fixture(scope="module")
def plain_snn(tmp_path_factory):
    """The bundled digits CNN, plain normalization (a few seconds)."""
    import os

    directory = tmp_path_factory.mktemp("plain")
    target = directory / "mine.snn.pt"
    from annsnn.cli.main import main

    cwd = os.getcwd()
    os.chdir(directory)
    try:
        main(["convert", "--calibration", "none", "--calib-samples", "128", "--out", str(target)])
    except SystemExit as exc:
        assert not exc.code
    finally:
        os.chdir(cwd)
    return target


def test_every_result_names_its_snn_file_and_hash(plain_snn, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    digest = hashlib.sha256(plain_snn.read_bytes()).hexdigest()
    code, out, err = run_cli(capsys, "energy", str(plain_snn), "--T", "5,20", "--samples", "40", "--json", "e.json", "--csv", "e.csv", "--markdown", "e.md")
    assert code == 0, err
    assert f"{plain_snn} (sha256 {digest[:12]})" in out.replace("\n", "")
    data = json.loads(Path("e.json").read_text())
    assert data["snn"] == {"path": str(plain_snn), "sha256": digest}
    rows = list(csv.DictReader(Path("e.csv").read_text().splitlines()))
    assert {(r["snn_file"], r["snn_sha256"]) for r in rows} == {(str(plain_snn), digest)}
    assert f"`{plain_snn}` (sha256 `{digest[:12]}`)" in Path("e.md").read_text()
    # one wording for break-even T in the terminal, the Markdown and the CSV
    wording = {name: str(BreakEven(BreakEvenKind(v["kind"]), v["T"])) for name, v in data["break_even_T"].items()}
    assert "None" not in Path("e.md").read_text()
    for name, text in wording.items():
        assert f"{name}: {text}" in " ".join(out.split()) and f"{name}: {text}" in Path("e.md").read_text()
        assert {r[f"break_even_{name}"] for r in rows} == {text}
    # the ANN row of a neuromorphic model says what it is priced under
    assert rows[0]["ann_reference_loihi"] == "45nm-fp32"

    code, out, err = run_cli(capsys, "evaluate", str(plain_snn), "--T", "5,20", "--samples", "40", "--json", "v.json")
    assert code == 0, err
    assert digest[:12] in out
    evaluation = json.loads(Path("v.json").read_text())
    assert evaluation["snn"]["sha256"] == digest
    # evaluate counts nothing, but measures firing rates: the same as energy's, never 0.0
    assert evaluation["firing_rates"] == data["firing_rates"] and all(v > 0 for r in data["firing_rates"].values() for v in r.values())
    assert [r["firing_rate"] for r in evaluation["rows"]] == [r["firing_rate"] for r in data["rows"]]
    assert evaluation["rows"][0]["synaptic_acs"] is None and evaluation["break_even_T"] is None


def test_evaluate_beyond_the_calibrated_T_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "convert", "--T", "8", "--calib-samples", "320", "--bias-samples", "64", "--out", "c.snn.pt")
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", "--T", "5,20", "--samples", "20")
    assert code == 0, err
    assert "T=20 is beyond the T=8 this SNN was calibrated for" in " ".join(out.split())


def test_the_bundled_models_snn_file_does_not_depend_on_the_install_location(tmp_path, capsys, monkeypatch):
    """The bundled CNN's SNN records a location-free source name, so its bytes and SHA-256 are
    the same in every clone (the README quotes the hash); a user's own file keeps its absolute path."""
    from annsnn import load_snn

    monkeypatch.chdir(tmp_path)
    common = ("--T", "8", "--calib-samples", "160", "--bias-samples", "64")
    code, out, err = run_cli(capsys, "convert", *common, "--out", "b.snn.pt")
    assert code == 0, err
    source = load_snn(tmp_path / "b.snn.pt").record.source
    assert (source.path, source.kind, source.arch) == ("bundled:digits_cnn.pt", "checkpoint", "digits_cnn")
    copy = tmp_path / "mine.pt"
    copy.write_bytes(embedded_checkpoint().read_bytes())
    code, out, err = run_cli(capsys, "convert", str(copy), *common, "--out", "m.snn.pt")
    assert code == 0, err
    assert load_snn(tmp_path / "m.snn.pt").record.source.path == str(copy.resolve())


def test_converting_an_untrained_zoo_architecture_says_so(tmp_path, capsys, monkeypatch):
    """zoo:NAME is the bare architecture (random weights): a user who converts it must be told
    that its accuracy means nothing; the bundled trained CNN gets no such note."""
    monkeypatch.chdir(tmp_path)
    common = ("--T", "8", "--calib-samples", "160", "--bias-samples", "64")
    code, out, err = run_cli(capsys, "convert", "zoo:digits_cnn", *common, "--out", "z.snn.pt")
    assert code == 0, err
    assert "note: zoo:digits_cnn is the architecture with random weights (untrained)" in " ".join(out.split())
    code, out, err = run_cli(capsys, "convert", *common, "--out", "b.snn.pt")
    assert code == 0, err
    assert "random weights" not in out


def test_a_threshold_only_conversion_mentions_no_bias_fit(tmp_path, capsys, monkeypatch):
    """--calibration threshold fits no bias: no printed line may speak of one (issue 29, item 9)."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "convert", "--calibration", "threshold", "--T", "8", "--calib-samples", "320", "--out", "t.snn.pt")
    assert code == 0, err
    text = " ".join(out.split())
    assert "readout delay" in text and "held-out calibration images" in text
    assert text.count("bias") == text.count("no bias") == 1  # only "thresholds searched at T=8; no bias"


def _commands(group, prefix=()):
    import click

    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))


def test_every_command_help_has_an_example_and_shows_its_defaults():
    from click.testing import CliRunner

    from annsnn.cli.main import cli

    runner = CliRunner()
    missing = []
    for path, _ in [((), cli), *_commands(cli)]:
        text = runner.invoke(cli, [*path, "--help"], terminal_width=80).output
        if "Example" not in text or "annsnn " + " ".join(path) not in " ".join(text.split()):
            missing.append(" ".join(path) or "annsnn")
    assert missing == []
    wide = [f"{' '.join(path) or 'annsnn'}: {line}" for path, _ in [((), cli), *_commands(cli)]
            for line in runner.invoke(cli, [*path, "--help"], terminal_width=80).output.splitlines() if len(line) > 80]
    assert wide == []  # examples too: a terminal of 80 columns would wrap them mid-command
    convert = " ".join(runner.invoke(cli, ["convert", "--help"]).output.split())
    assert "default 0.9" in convert and "linear (default)" in convert and "pipeline's" not in convert
    demo = runner.invoke(cli, ["demo", "--help"]).output
    assert "(99.99)" not in demo


def test_an_explicit_mode_changes_the_result_or_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ("--T", "8", "--calib-samples", "320", "--bias-samples", "64")
    scales = {}
    for name, flags in (("default", ()), ("third", ("--mode", "1/3"))):
        code, out, err = run_cli(capsys, "convert", *common, *flags, "--out", f"{name}.snn.pt", "--json", f"{name}.json")
        assert code == 0, err
        report = json.loads(Path(f"{name}.json").read_text())["report"]
        scales[name] = [layer["scale"] for layer in report["layers"]]
        assert report["options"]["bias"] == "step"  # the bias fit stays on top
    assert report["options"]["threshold"] == "mode" and report["options"]["mode"]["kind"] == "fraction"
    assert scales["default"] != scales["third"]
    code, out, err = run_cli(capsys, "convert", *common, "--calibration", "threshold", "--mode", "99.9", "--out", "x.snn.pt")
    assert code == 2 and "--mode sets the thresholds, but --calibration threshold searches them" in err and not Path("x.snn.pt").exists()
    code, out, err = run_cli(capsys, "convert", *common[:4], "--calibration", "threshold", "--out", "t.snn.pt")  # no --bias-samples: it fits no bias
    assert code == 0 and "bias repeats" not in out  # no step bias, no sentence about it


@pytest.fixture(scope="module")
def demo_like():
    """The bundled CNN, plain conversion, analysed at T=5,20,50 under the demo's three models."""
    from annsnn.conversion_options import ConversionOptions
    from annsnn.data import load_dataset, make_loader
    from annsnn.modes import parse_mode
    from annsnn.sources import load_source, resolve_inputs

    loaded = load_source(None)
    inputs = resolve_inputs(loaded)
    images = [x for x, _ in make_loader(load_dataset("digits", "train"), 128, 256)]
    options = ConversionOptions.plain(parse_mode("99.99"))
    snn, report = ann_to_snn(loaded.module, images, input_shape=inputs.input_shape, options=options, normalization=inputs.normalization)
    x, y = next(iter(make_loader(load_dataset("digits", "test"), 60, 60)))
    with Analyzer(snn, [5, 20, 50], energy_models=["45nm-fp32", "45nm-fp32+sram", "loihi"]) as a:
        a.run(x, y)
    return snn, report, a.report()


def _render(renderable, width: int) -> str:
    import io

    from rich.console import Console

    buffer = io.StringIO()
    Console(width=width, file=buffer, color_system=None).print(renderable)
    return buffer.getvalue()


@pytest.mark.parametrize("width", [80, 100])
def test_tables_fit_80_columns_and_nothing_is_cut(demo_like, width):
    from annsnn.cli.render import ann_layer_table, conversion_table, energy_str, energy_table, evaluation_table, layer_table, pct, si
    from annsnn.workspace import SnnFile

    snn, report, result = demo_like
    file = SnnFile("/home/someone/projects/digits/digits_cnn.snn.pt", "ab" * 32)
    from annsnn.cli.render import info_table
    from annsnn.counting import count_ann

    counts = count_ann(snn.ann, (1, 8, 8))
    texts = {name: _render(table, width) for name, table in (
        ("info", info_table(counts, {}, "/home/someone/projects/digits/digits_cnn.pt — input 1×8×8")),
        ("conversion", conversion_table(report)), ("evaluation", evaluation_table(result, file)), ("energy", energy_table(result, file)),
        ("layers", layer_table(result)), ("ann layers", ann_layer_table(result)))}
    for name, text in texts.items():
        assert "…" not in text, name
        assert max(len(line) for line in text.splitlines()) <= width, name
    energy = texts["energy"]
    cells = [pct(r.top1) for r in result.rows] + [si(r.synaptic_acs) for r in result.rows] + [si(r.total_ops) for r in result.rows]
    cells += [energy_str(r.energy_pj[m]) for r in result.rows for m in result.energy_models] + [f"×{r.energy_ratio[m]:.3f}" for r in result.rows for m in result.energy_models]
    cells += ["45nm-fp32", "loihi", "sha256 abababababab"] + [f"T={r.T}" for r in result.rows]
    assert [c for c in cells if c not in energy] == []
    layers = texts["layers"] + texts["ann layers"]
    assert [c for l in result.layers for c in (energy_str(l.energy_pj["loihi"]), l.name.removeprefix("model.")) if c not in layers] == []


@pytest.mark.parametrize("width", [80, 100])
def test_energy_models_listing_fits_and_breaks_no_word(width):
    """'annsnn energy-models' at 80 columns: every constant in a narrow table, every
    citation whole (word for word, none folded mid-word) in a numbered list under it."""
    from annsnn.cli.render import energy_models_table
    from annsnn.energy import PRESETS

    text = _render(energy_models_table(PRESETS), width)
    lines = text.splitlines()
    assert "…" not in text and max(len(line) for line in lines) <= width
    words = set(text.split())
    for m in PRESETS:
        row = next(line for line in lines if line.startswith(f"│ {m.name} "))
        mac = "–" if m.e_mac_pj is None else f"{m.e_mac_pj:g}"
        assert [cell.strip() for cell in row.split("│")[1:5]] == [m.name, m.kind, mac, f"{m.e_ac_pj:g}"], row
        assert set(m.citation.split()) <= words, m.name  # a word folded across lines would be missing
    flat = " ".join(text.split())
    for number, citation in enumerate(dict.fromkeys(m.citation for m in PRESETS), 1):
        assert f"[{number}] {' '.join(citation.split())}" in flat


@pytest.mark.parametrize("width", [80, 100])
def test_zoo_listing_fits_and_breaks_no_word(width):
    """'annsnn zoo list' at 80 columns: each model's description is readable, wrapped between
    words (a narrow description column folded 'conv-BN-ReLU' into 'conv-BN-Re' / 'LU')."""
    from annsnn.cli.render import si, zoo_table
    from annsnn.zoo import architectures

    rows = [(spec.name, "×".join(map(str, spec.input_shape)), spec.dataset, 1_234_567, 36_960_000, spec.description) for spec in architectures().values()]
    text = _render(zoo_table(rows), width)
    lines = text.splitlines()
    assert "…" not in text and max(len(line) for line in lines) <= width
    words = set(text.replace("│", " ").split())
    for name, shape, dataset, _, _, description in rows:
        assert any(f"│ {name} " in line and f" {shape} " in line and f" {dataset} " in line for line in lines), name
        assert set(description.split()) <= words, name
    assert si(1_234_567) in text and si(36_960_000) in text


@pytest.mark.parametrize("time_steps", [[5, 20, 50], [2, 4, 8, 16, 32, 64]])
def test_robustness_table_fits_80_columns_for_any_number_of_T(time_steps):
    """At 80 columns a score such as 100.00 was folded into '(100.' / '00)' by five columns of
    T; one row per perturbation and T keeps every number whole, however many T there are."""
    from annsnn.cli.render import pct, robustness_table
    from annsnn.metrics import ClassificationMetrics
    from annsnn.robustness import RobustnessResult, RobustnessRow

    def scores(top1):
        return ClassificationMetrics(top1, top1, top1, None, [[1]])

    rows = [RobustnessRow(name, strength, on, "", scores(0.9667), {t: scores(1.0 - t / 1000) for t in time_steps}, {t: 0.9833 for t in time_steps})
            for name, strength, on in (("clean", 0.0, "none"), ("salt-pepper", 0.05, "none"), ("fgsm", 0.05, "ann"), ("pgd", 0.02, "snn"))]
    result = RobustnessResult(1, 60, time_steps, {}, rows)
    text = _render(robustness_table(result), 80)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for row in rows:
        for t in time_steps:
            line = next(line for line in text.splitlines() if f"│ {t:>2} │" in line and pct(row.snn[t].top1) in line)
            assert pct(row.agreement[t]) in line
    assert text.count("96.67") == len(rows) and "SNN (BPTT)" in text and "salt-pepper" in text


@pytest.mark.parametrize("args", [(), ("zoo",)])
def test_a_bare_command_prints_its_help_not_an_error(capsys, args):
    """'annsnn' alone is a request for help: the formatted help on stdout, exit 0, not the
    help flattened into one 'error: Usage: ...' line (click raises NoArgsIsHelpError)."""
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith(" ".join(("Usage: annsnn", *args))) and "Commands:" in lines
    assert any(line.split()[:1] == ["list" if args else "convert"] for line in lines)


def test_piped_output_follows_COLUMNS():
    import os
    import subprocess
    import sys

    widths = {}
    for columns in ("80", "132"):
        env = dict(os.environ, COLUMNS=columns)
        done = subprocess.run([sys.executable, "-m", "annsnn", "energy-models"], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        widths[columns] = max(len(line) for line in done.stdout.splitlines())
    assert widths["80"] <= 80 < widths["132"] <= 132


def test_spiking_network_forward_equals_simulate_bit_for_bit(demo_like):
    from annsnn import simulate

    snn, _, _ = demo_like
    from annsnn.data import load_dataset, make_loader

    x, _ = next(iter(make_loader(load_dataset("digits", "test"), 16, 16)))
    # chunk=1: simulate runs the same [B, ...] step as forward does, so equality is bit for bit on
    # every CPU (merged chunks of [K*B, ...] can round differently: MKL's AVX2 matrix products
    # depend on the batch size, 7.6e-6 on these outputs; test_merged_chunks_agree_to_rounding)
    reference = simulate(snn, x, [1, 7, 12], readout_delay=0, chunk=1)
    seen = []
    (first, layer), *_ = snn.neuron_layers().items()
    hook = layer.register_forward_hook(lambda m, a, out: seen.append(out.clone()))
    snn.reset()
    acc = snn(x)
    assert torch.equal(acc, reference.outputs[1])
    for t in range(2, 13):
        acc = acc + snn(x)
        if t in (7, 12):
            assert torch.equal(acc, reference.outputs[t]), t
    hook.remove()
    assert len(seen) == 12 and all(set(s.unique().tolist()) <= {0.0, 1.0} for s in seen)
    snn.reset()
    steps = snn(x, T=12)
    assert steps.shape == (12, 16, 10)
    running = steps[0]
    for t in range(1, 12):
        running = running + steps[t]
    assert torch.equal(running, reference.outputs[12])
    snn.reset()  # reset() starts afresh: the same first step again
    assert torch.equal(snn(x), reference.outputs[1])


def test_merged_chunks_agree_with_single_steps_to_float_rounding(demo_like):
    """simulate's default merges steps into [K*B, ...] batches: the readout equals the
    one-step-at-a-time run to float32 rounding (bit for bit where the kernels do not depend on
    the batch size), with identical spikes on these images."""
    from annsnn import simulate
    from annsnn.data import load_dataset, make_loader

    snn, _, _ = demo_like
    x, _ = next(iter(make_loader(load_dataset("digits", "test"), 16, 16)))
    single = simulate(snn, x, [12], readout_delay=0, chunk=1)
    for chunk in (5, 12):
        merged = simulate(snn, x, [12], readout_delay=0, chunk=chunk)
        assert torch.equal(merged.predictions(12), single.predictions(12))
        torch.testing.assert_close(merged.outputs[12], single.outputs[12], rtol=1e-6, atol=1e-5)


def test_plots_read_back_legends_and_ticks(demo_like):
    from annsnn.plots import make_figures

    _, _, result = demo_like
    figures = make_figures(result, plain=result)
    for fig in figures.values():
        fig.canvas.draw()
    energy = figures["energy_vs_T"].axes[0]
    labels = [t.get_text() for t in energy.get_legend().get_texts()]
    assert len(labels) == len(set(labels))  # "ANN (45nm-fp32)" once, though loihi prices the ANN under it too
    assert labels == ["SNN 45nm-fp32", "ANN (45nm-fp32)", "SNN 45nm-fp32+sram", "ANN (45nm-fp32+sram)", "SNN loihi"]
    references = [line for line in energy.get_lines() if line.get_label().startswith("ANN")]
    assert len({str(line.get_linestyle()) for line in references}) == len(references) == 2
    legend_box = energy.get_legend().get_window_extent()
    assert legend_box.x0 >= energy.get_window_extent().x1  # beside the curves, not on them
    for name in ("accuracy_vs_T", "energy_vs_T"):
        ax = figures[name].axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "20", "50"], name
    accuracy = figures["accuracy_vs_T"].axes[0]
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == ["SNN (calibrated)", "SNN (plain normalization)", "ANN"]
    low, high = accuracy.get_ylim()
    assert high - low >= 5 and 0 <= low and high <= 101
    firing = figures["firing_rates"].axes[0]
    names = [t.get_text() for t in firing.get_xticklabels()]
    assert names == [layer.name.removeprefix("model.") for layer in result.layers if layer.role == "neurons"]
    assert all(not n.startswith("model.") for n in names)
    import matplotlib.pyplot as plt

    for fig in figures.values():
        plt.close(fig)


def test_importing_and_counting_print_no_warning():
    """fvcore's import-time torch.jit.script FutureWarning does not reach the user."""
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('default')\n"
            "import torch, annsnn\nfrom annsnn.counting import count_ann\n"
            "count_ann(torch.nn.Sequential(torch.nn.Linear(3, 2)), (3,))\n")
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr


README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_library_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    text = README.read_text(encoding="utf-8")
    start = text.index("```python", text.index("**From Python.**")) + len("```python")
    snippet = text[start: text.index("```", start)]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    result, snn, x = namespace["result"], namespace["snn"], namespace["x"]
    assert [row.T for row in result.rows] == [8, 16, 32] and result.rows[-1].top1 > 0.97
    assert snn.record.calibration.T == 32  # the library default is the calibrated pipeline
    from annsnn import simulate

    assert torch.equal(namespace["out"], simulate(snn, x, 8, readout_delay=0, chunk=1).outputs[8])
    printed = capsys.readouterr().out
    shown = [f"T={row.T}: {100 * row.top1:.2f} %" for row in result.rows]
    assert printed == f"{shown} {result.break_even_T['45nm-fp32']}\n"


def test_the_library_default_is_the_command_line_default():
    from annsnn.conversion_options import ConversionOptions
    from annsnn.modes import parse_mode

    assert ConversionOptions() == ConversionOptions.low_latency(32) == ConversionOptions.calibrated("threshold+step-bias", 32)
    plain = ConversionOptions.plain(parse_mode("99.99"))
    assert (plain.threshold, plain.bias, plain.T, plain.v_init, plain.channel_wise, plain.readout_delay) == ("mode", "none", None, 0.0, False, 0)
    assert ConversionOptions.calibrated("none", None, v_init=0.0) == plain


DOCS = README.parent / "docs"


def _python_block(path: Path, first_line: str) -> str:
    """The ```python block of ``path`` that starts with ``first_line``."""
    text = path.read_text(encoding="utf-8")
    start = text.index("```python\n" + first_line) + len("```python\n")
    return text[start: text.index("```", start)]


def test_the_library_doc_step_loop_runs_as_written(tmp_path, monkeypatch, cnn_and_data):
    """docs/library.md's step-by-step loop: self-contained (it used snn, x and T without
    defining them), and its comment's claim holds bit for bit."""
    from annsnn import ConversionOptions, ann_to_snn, save_snn, simulate
    from annsnn.modes import parse_mode

    model, xtr, _ = cnn_and_data
    snn, _ = ann_to_snn(model, [xtr[:64]], input_shape=(1, 8, 8), options=ConversionOptions.plain(parse_mode("99.99")))
    (tmp_path / "demo-out").mkdir()
    save_snn(snn, tmp_path / "demo-out" / "digits_cnn.snn.pt")  # what 'annsnn demo' writes there
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_block(DOCS / "library.md", "import torch\nfrom annsnn import load_snn"), "library.md", "exec"), namespace)  # noqa: S102
    loaded, x, T = namespace["snn"], namespace["x"], namespace["T"]
    assert tuple(x.shape) == (4, 1, 8, 8) and T == 8
    assert torch.equal(namespace["acc"], simulate(loaded, x, T, readout_delay=0, chunk=1).outputs[T])
    assert tuple(namespace["steps"].shape) == (8, 4, 10)


def test_the_guide_registry_snippet_runs_as_written(tmp_path, monkeypatch):
    """docs/guide.md's own-op example: self-contained (ChannelShuffle, model and batches were
    undefined), the file reloads with the registry and is refused without it."""
    from annsnn import load_snn
    from annsnn.errors import UsageError

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_block(DOCS / "guide.md", "import torch\nfrom torch import nn\n"), "guide.md", "exec"), namespace)  # noqa: S102
    snn = namespace["snn"]
    shuffles = [m for m in snn.modules() if type(m).__name__ == "ChannelShuffle"]  # the SNN's and its reference ANN's
    assert len(shuffles) == 2 and all(m.groups == 2 for m in shuffles)
    with pytest.raises(UsageError, match="unknown layer type"):
        load_snn(tmp_path / "net.snn")
