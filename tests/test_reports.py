"""Committed reports agree with the code where a cheap fresh run exists: every MAC count
(fvcore, padded positions excluded; weights do not matter) and the demo rows of
reports/measured.md (op-count estimates and accuracy; the measured times are not rerun)."""
import re
from pathlib import Path

import pytest

from annsnn.counting import count_ann
from annsnn.zoo import architectures, build

REPORTS = Path(__file__).resolve().parent.parent / "reports"


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _macs(name: str, shape=None) -> int:
    spec = architectures()[name]
    return count_ann(build(name).eval(), tuple(shape or spec.input_shape)).macs


def test_structure_report_mac_counts():
    text = (REPORTS / "structure.md").read_text(encoding="utf-8")
    found = re.findall(r"^## (\S+)\n.*?^ANN: ([\d,]+) MACs", text, flags=re.M | re.S)
    assert [name for name, _ in found] == ["vgg19_bn_cifar", "mobilenet_v2_cifar"]
    for name, macs in found:
        assert _int(macs) == _macs(name), name


def test_mnist_report_mac_counts():
    text = (REPORTS / "mnist.md").read_text(encoding="utf-8")
    rows = [line.split("|")[1:-1] for line in text.splitlines() if re.match(r"^\| (mlp_|mnist_|lenet)", line)]
    head = next(line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| model | mode |"))
    column = [h.strip() for h in head].index("ANN MACs")
    seen = {}
    for row in rows:
        if len(row) == len(head):
            seen[row[0].strip()] = _int(row[column].strip())
    assert seen, "no model rows found"
    for name, macs in seen.items():
        assert macs == _macs(name, (1, 28, 28)), name


@pytest.mark.xfail(strict=True, reason="reports/cifar10.md predates the padding-free MAC count (40,551,040 with padding); 'make reports' regenerates it (hours on 2 cores): then remove this mark")
def test_cifar10_report_mac_count():
    text = (REPORTS / "cifar10.md").read_text(encoding="utf-8")
    ann = re.search(r"^\| ANN \| [\d.]+ \| – \| ([\d,]+) \|", text, flags=re.M)
    assert ann is not None
    assert _int(ann.group(1)) == _macs("resnet20")


def test_measured_report_demo_rows_match_a_fresh_run():
    """reports/measured.md's demo section: top-1 and both energy estimates of every row."""
    from annsnn import Analyzer, ann_to_snn
    from annsnn.convert import ConversionOptions
    from annsnn.data import load_dataset, make_loader
    from annsnn.modes import parse_mode
    from annsnn.sources import load_source, resolve_inputs

    text = (REPORTS / "measured.md").read_text(encoding="utf-8")
    section = text[text.index("## Demo model"): text.index("\n## ", text.index("## Demo model") + 5)]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines() if re.match(r"^\| (ANN|SNN T=\d+) \|", line)}
    loaded = load_source(None)
    inputs = resolve_inputs(loaded)
    plain = ConversionOptions.plain(parse_mode("99.99")) if hasattr(ConversionOptions, "plain") else ConversionOptions(mode=parse_mode("99.99"))
    snn, _ = ann_to_snn(loaded.module, (x for x, _ in make_loader(load_dataset("digits", "train"), 256)), input_shape=inputs.input_shape,
                        options=plain, normalization=inputs.normalization)
    with Analyzer(snn, [5, 20, 50], energy_models=["45nm-fp32", "45nm-fp32+sram"]) as a:
        for x, y in make_loader(load_dataset("digits", "test"), 120):
            a.run(x, y)
    result = a.report()
    fresh = {"ANN": (result.ann.top1, result.ann.energy_pj)} | {f"SNN T={r.T}": (r.top1, r.energy_pj) for r in result.rows}
    assert set(rows) == set(fresh)
    for name, (top1, energy) in fresh.items():
        cells = rows[name]
        assert cells[1] == f"{100 * top1:.2f}", name
        assert cells[6] == f"{energy['45nm-fp32'] / 1e6:.4g}", name
        assert cells[8] == f"{energy['45nm-fp32+sram'] / 1e6:.4g}", name


@pytest.mark.parametrize("report", ["measured.md"])
def test_regenerated_reports_name_their_commit(report):
    text = (REPORTS / report).read_text(encoding="utf-8")
    assert re.search(r"at commit `[0-9a-f]{7,}`", text), report
