import json

import pytest
import torch
from hypothesis import given, strategies as st

from annsnn.analyzer import Analyzer
from annsnn.energy import PRESETS, EnergyModel, break_even, get_energy_model, load_energy_model
from annsnn.errors import UsageError
from annsnn.io import load_model
from annsnn.pipeline import ann_to_snn
from annsnn.zoo import embedded_checkpoint


def test_presets_have_the_documented_constants_and_citations():
    table = {m.name: m for m in PRESETS}
    assert (table["45nm-fp32"].e_mac_pj, table["45nm-fp32"].e_ac_pj) == (4.6, 0.9)
    assert (table["45nm-fp16"].e_mac_pj, table["45nm-fp16"].e_ac_pj) == (1.5, 0.4)
    assert (table["45nm-int8"].e_mac_pj, table["45nm-int8"].e_ac_pj) == (0.23, 0.03)
    assert (table["12nm-t4"].e_mac_pj, table["12nm-t4"].e_ac_pj) == (1.6, 0.58) and not table["12nm-t4"].verified
    assert table["loihi"].e_ac_pj == pytest.approx(23.6 + 3.5) and table["loihi"].e_neuron_pj == 81
    assert (table["spinnaker2"].e_ac_pj, table["spinnaker2"].e_neuron_pj) == (450, 2190)
    assert table["truenorth"].e_ac_pj == 26
    assert all(m.citation for m in PRESETS)


@pytest.fixture(scope="module")
def analysis():
    from annsnn.data import load_dataset

    xtr, _ = load_dataset("digits", "train").tensors
    xte, yte = load_dataset("digits", "test").tensors
    snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [xtr[:256]], input_shape=(1, 8, 8), normalization=([0.3054], [0.3761]))
    with Analyzer(snn, [4, 16], energy_models=[m.name for m in PRESETS]) as a:
        a.run(xte[:48], yte[:48])
    return a.report()


def test_energy_is_counts_times_constants_for_every_preset(analysis):
    ann = analysis.ann
    for model in PRESETS:
        reference = model if model.kind == "digital" else get_energy_model(model.ann_reference)
        assert ann.energy_pj[model.name] == pytest.approx(reference.e_mac_pj * ann.macs + reference.e_ac_pj * ann.bias_adds, rel=1e-12)
        for row in analysis.rows:
            if model.kind == "digital":
                expected = model.e_mac_pj * row.macs + model.e_ac_pj * (row.synaptic_acs + row.bias_acs + row.neuron_updates)
            else:
                expected = model.e_ac_pj * (row.synaptic_acs + row.macs) + model.e_neuron_pj * row.neuron_updates
            assert row.energy_pj[model.name] == pytest.approx(expected, rel=1e-12)
            assert row.energy_ratio[model.name] == pytest.approx(expected / ann.energy_pj[model.name], rel=1e-12)


def test_custom_model_file_round_trip(tmp_path):
    model = EnergyModel("my-chip", 2.0, 0.5, 0.25, "my measurements, 2026")
    json_path = tmp_path / "chip.json"
    json_path.write_text(json.dumps(model.to_dict()))
    assert load_energy_model(json_path) == model
    toml_path = tmp_path / "chip.toml"
    toml_path.write_text('name = "my-chip"\ne_mac_pj = 2.0\ne_ac_pj = 0.5\ne_neuron_pj = 0.25\ncitation = "my measurements, 2026"\n')
    assert get_energy_model(str(toml_path)) == model


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"name": "x", "e_mac_pj": 1, "e_ac_pj": 1, "citation": "c"}', "lacks e_neuron_pj"),
        ('{"name": "x", "e_mac_pj": -1, "e_ac_pj": 1, "e_neuron_pj": 1, "citation": "c"}', ">= 0"),
        ('{"name": "x", "e_mac_pj": "a", "e_ac_pj": 1, "e_neuron_pj": 1, "citation": "c"}', ">= 0"),
        ("not json", "not valid"),
    ],
)
def test_bad_energy_model_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        get_energy_model(str(path))


def test_unknown_energy_model_name():
    with pytest.raises(UsageError, match="unknown energy model"):
        get_energy_model("45nm-fp64")


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=60), st.floats(0, 3000, allow_nan=False))
def test_break_even_matches_brute_force(increments, ann):
    cumulative = []
    total = 0.0
    for inc in increments:
        total += inc
        cumulative.append(total)
    brute = None
    for t, energy in enumerate(cumulative, start=1):
        if energy < ann:
            brute = t
    result = break_even(cumulative, ann)
    assert result.T == brute
    assert result.beyond_simulated == (brute == len(cumulative))


def test_break_even_in_report_is_consistent_with_rows(analysis):
    value = analysis.break_even_T["45nm-fp32"]
    assert value is not None


def test_sram_access_cost_interpolates_by_memory_size():
    from annsnn.energy import SRAM_LEMAIRE

    # per 32-bit value = half the 64-bit figure
    assert SRAM_LEMAIRE.access_pj(8 * 1024) == pytest.approx(5.0)
    assert SRAM_LEMAIRE.access_pj(32 * 1024) == pytest.approx(10.0)
    assert SRAM_LEMAIRE.access_pj(1024 * 1024) == pytest.approx(50.0)
    assert SRAM_LEMAIRE.access_pj(16 * 1024) == pytest.approx(7.5)  # log-linear midpoint
    assert SRAM_LEMAIRE.access_pj(100) == 5.0 and SRAM_LEMAIRE.access_pj(1 << 30) == 50.0


def test_memory_aware_energy_against_a_hand_count():
    """Identity Linear(5,5) -> IF -> Linear(5,3, no bias), input pattern with 3 ones, T=2.
    Every memory here is under 8 KB, so each 32-bit access costs 5 pJ."""
    from torch import nn

    pattern = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    first = nn.Linear(5, 5)
    with torch.no_grad():
        first.weight.copy_(torch.eye(5))
        first.bias.zero_()
    model = nn.Sequential(first, nn.ReLU(), nn.Linear(5, 3, bias=False)).eval()
    from annsnn.convert import ConversionOptions
    from annsnn.modes import parse_mode

    snn, _ = ann_to_snn(model, [pattern], input_shape=(5,), options=ConversionOptions(mode=parse_mode("max")))
    with Analyzer(snn, [2], energy_models=["45nm-fp32", "45nm-fp32+sram"]) as a:
        a.run(pattern)
    r = a.report()
    # SNN memory: first layer once: 25 MACs x (w 5 + in 5 + 5 outputs/25 MACs x 5) = 275, its 5 biases x 2 x 5 = 50;
    # IF updates 2 steps x 5 x (read + write) x 5 = 100; 2 steps x 9 synaptic events x (w 5 + potential 2 x 5) = 270
    snn_memory = 275 + 50 + 100 + 270
    # ANN memory: layer 0: 25 x (5 + 5) + 5 x 5 = 275; layer 2: 15 x (5 + 5) + 3 x 5 = 165
    ann_memory = 275 + 165
    compute_snn = 4.6 * 25 + 0.9 * (18 + 5 + 10)
    compute_ann = 4.6 * 40 + 0.9 * 5
    row = r.rows[0]
    assert row.energy_pj["45nm-fp32"] == pytest.approx(compute_snn)
    assert row.energy_pj["45nm-fp32+sram"] == pytest.approx(compute_snn + snn_memory)
    assert r.ann.energy_pj["45nm-fp32+sram"] == pytest.approx(compute_ann + ann_memory)


def test_seed_bound_only_for_poisson_and_brackets_the_estimate():
    from annsnn.data import load_dataset

    xtr, _ = load_dataset("digits", "train").tensors
    xte, yte = load_dataset("digits", "test").tensors
    snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [xtr[:256]], input_shape=(1, 8, 8), normalization=([0.3054], [0.3761]))
    with Analyzer(snn, [4, 16], encoding="poisson") as a:
        a.run(xte[:32], yte[:32])
    for row in a.report().rows:
        low, high = row.seed_bound_pj["45nm-fp32"]
        first_layer_macs = 16 * 9 * 64  # conv 1->16, 3x3, 8x8 outputs
        assert low == pytest.approx(row.T * 4.6 * first_layer_macs)
        assert low <= row.energy_pj["45nm-fp32"] and high > low
    with Analyzer(snn, [4]) as a:
        a.run(xte[:8], yte[:8])
    assert a.report().rows[0].seed_bound_pj is None
