import json

import pytest
import torch
from hypothesis import given, strategies as st

from annsnn.conversion_options import ConversionOptions
from annsnn.analyzer import Analyzer
from annsnn.energy import PRESETS, BreakEven, BreakEvenKind, EnergyModel, break_even, get_energy_model, load_energy_model
from annsnn.errors import UsageError
from annsnn.model_files import load_model
from annsnn.pipeline import ann_to_snn
from annsnn.modes import parse_mode
from torch import nn
from annsnn.zoo import embedded_checkpoint


def test_presets_have_the_documented_constants_and_citations():
    table = {m.name: m for m in PRESETS}
    assert (table["45nm-fp32"].e_mac_pj, table["45nm-fp32"].e_ac_pj) == (4.6, 0.9)
    assert (table["45nm-fp16"].e_mac_pj, table["45nm-fp16"].e_ac_pj) == (1.5, 0.4)
    assert (table["45nm-int8"].e_mac_pj, table["45nm-int8"].e_ac_pj) == (0.23, 0.03)
    assert (table["12nm-t4"].e_mac_pj, table["12nm-t4"].e_ac_pj) == (1.6, 0.58) and not table["12nm-t4"].verified
    # Davies et al. 2018, Table 2: 23.6 pJ per synaptic op (3.5 is its time in ns); 81 / 52 pJ active / inactive update
    assert (table["loihi"].e_ac_pj, table["loihi"].e_neuron_pj, table["loihi"].e_neuron_inactive_pj) == (23.6, 81, 52)
    assert (table["spinnaker2"].e_ac_pj, table["spinnaker2"].e_neuron_pj) == (450, 2190)
    assert "1903.08941" in table["spinnaker2"].citation and "28 nm" in table["spinnaker2"].citation and not table["spinnaker2"].verified
    assert table["truenorth"].e_ac_pj == 26
    assert all(m.e_mac_pj is None for m in PRESETS if m.kind == "neuromorphic")  # no meaningless E_MAC
    assert [table[n].value_bytes for n in ("45nm-fp32", "45nm-fp16", "45nm-int8")] == [4, 2, 1]
    assert all(m.citation for m in PRESETS)


def test_derived_memory_models_inherit_provenance():
    """Item 10: 12nm-t4+sram kept no UNVERIFIED flag."""
    base, derived = get_energy_model("12nm-t4"), get_energy_model("12nm-t4+sram")
    assert derived.verified is False and base.note in derived.note and base.citation in derived.citation
    assert derived.memory is not None and (derived.e_mac_pj, derived.e_ac_pj) == (base.e_mac_pj, base.e_ac_pj)
    assert get_energy_model("45nm-int8+sram").value_bytes == 1
    with pytest.raises(UsageError, match="digital models only"):
        get_energy_model("loihi+sram")


@pytest.fixture(scope="module")
def analysis():
    from annsnn.data import load_dataset

    xtr, _ = load_dataset("digits", "train").tensors
    xte, yte = load_dataset("digits", "test").tensors
    snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [xtr[:256]], input_shape=(1, 8, 8), normalization=([0.3054], [0.3761]), options=ConversionOptions.plain())
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
                expected = model.e_mac_pj * row.macs + model.e_ac_pj * (row.synaptic_acs + row.bias_acs + row.neuron_updates + row.comparisons)
            else:
                inactive = model.e_neuron_pj if model.e_neuron_inactive_pj is None else model.e_neuron_inactive_pj
                expected = (model.e_ac_pj * (row.synaptic_acs + row.macs + row.comparisons) + model.e_neuron_pj * row.active_updates
                            + inactive * (row.neuron_updates - row.active_updates))
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


def _tiny_snn():
    """Identity Linear(5,5) -> IF -> Linear(5,3, no bias), input pattern with 3 ones: the IF
    layer spikes the pattern at every step (3 spikes of 5 neurons, fan-out 3)."""
    from torch import nn

    from annsnn.convert import ConversionOptions
    from annsnn.modes import parse_mode

    pattern = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    first = nn.Linear(5, 5)
    with torch.no_grad():
        first.weight.copy_(torch.eye(5))
        first.bias.zero_()
    model = nn.Sequential(first, nn.ReLU(), nn.Linear(5, 3, bias=False)).eval()
    snn, _ = ann_to_snn(model, [pattern], input_shape=(5,), options=ConversionOptions.plain(mode=parse_mode("max")))
    return snn, pattern


def test_break_even_in_report_is_the_closed_form():
    """Per step: 9 SyOPs + 5 updates = 14 ACs; once: 25 MACs + 5 bias ACs. E(T) = 4.6*25 + 0.9*5 + 0.9*14*T
    = 119.5 + 12.6 T against the ANN's 4.6*40 + 0.9*5 = 188.5: cheaper up to T = 5 (182.5 < 188.5 < 195.1)."""
    snn, pattern = _tiny_snn()
    with Analyzer(snn, [8]) as a:
        a.run(pattern)
    r = a.report()
    assert r.ann.energy_pj["45nm-fp32"] == pytest.approx(188.5)
    assert r.rows[0].energy_pj["45nm-fp32"] == pytest.approx(119.5 + 12.6 * 8)
    assert r.break_even_T["45nm-fp32"] == BreakEven(BreakEvenKind.AT, 5)


def test_neuromorphic_presets_against_a_hand_count():
    """T=2 on the tiny net, counted by hand: SyOPs 2 x 3 spikes x fan-out 3 = 18; analog MACs 25 (once);
    neuron updates 2 x 5 = 10, of which active 2 x 3 = 6 (the neurons with input). The ANN runs under 45nm-fp32."""
    snn, pattern = _tiny_snn()
    with Analyzer(snn, [2], energy_models=["loihi", "spinnaker2", "truenorth"]) as a:
        a.run(pattern)
    r = a.report()
    row = r.rows[0]
    synaptic = 18 + 25
    assert row.energy_pj["loihi"] == pytest.approx(23.6 * synaptic + 81 * 6 + 52 * 4)
    assert row.energy_pj["spinnaker2"] == pytest.approx(450 * synaptic + 2190 * 10)
    assert row.energy_pj["truenorth"] == pytest.approx(26 * synaptic)
    ann = 4.6 * 40 + 0.9 * 5
    assert r.ann.energy_pj == {"loihi": pytest.approx(ann), "spinnaker2": pytest.approx(ann), "truenorth": pytest.approx(ann)}
    assert row.energy_ratio["loihi"] == pytest.approx((23.6 * synaptic + 81 * 6 + 52 * 4) / ann)
    assert any("spinnaker2: UNVERIFIED" in note for note in r.notes)


def test_sram_access_cost_interpolates_by_memory_size_and_value_width():
    from annsnn.energy import SRAM_LEMAIRE

    # per 32-bit value = half the 64-bit figure
    assert SRAM_LEMAIRE.access_pj(8 * 1024, 4) == pytest.approx(5.0)
    assert SRAM_LEMAIRE.access_pj(32 * 1024, 4) == pytest.approx(10.0)
    assert SRAM_LEMAIRE.access_pj(1024 * 1024, 4) == pytest.approx(50.0)
    assert SRAM_LEMAIRE.access_pj(16 * 1024, 4) == pytest.approx(7.5)  # log-linear midpoint
    assert SRAM_LEMAIRE.access_pj(100, 4) == 5.0
    # int8 and fp16 values: 1/8 and 1/4 of a 64-bit access
    assert SRAM_LEMAIRE.access_pj(100, 1) == pytest.approx(1.25) and SRAM_LEMAIRE.access_pj(32 * 1024, 2) == pytest.approx(5.0)


def test_tensors_beyond_the_on_chip_capacity_cost_dram():
    """Horowitz (ISSCC 2014): DRAM 1.3-2.6 nJ per 64-bit access; the low end, beyond 1 MiB on chip."""
    from annsnn.energy import SRAM_LEMAIRE

    assert SRAM_LEMAIRE.on_chip_bytes == 1 << 20
    assert SRAM_LEMAIRE.access_pj(1 << 20, 4) == pytest.approx(50.0)  # still SRAM
    assert SRAM_LEMAIRE.access_pj((1 << 20) + 1, 4) == pytest.approx(650.0)
    assert SRAM_LEMAIRE.access_pj(1 << 30, 1) == pytest.approx(162.5)


def test_memory_width_follows_the_precision():
    """The tiny net under 45nm-int8+sram: the same accesses as the fp32 hand count below
    (695 SNN, 440 ANN accesses x 5 pJ), each 1 byte wide: 10 pJ / 8 = 1.25 pJ."""
    snn, pattern = _tiny_snn()
    with Analyzer(snn, [2], energy_models=["45nm-int8", "45nm-int8+sram"]) as a:
        a.run(pattern)
    r = a.report()
    row = r.rows[0]
    assert row.energy_pj["45nm-int8+sram"] - row.energy_pj["45nm-int8"] == pytest.approx(695 / 5 * 1.25)
    assert r.ann.energy_pj["45nm-int8+sram"] - r.ann.energy_pj["45nm-int8"] == pytest.approx(440 / 5 * 1.25)


def test_per_layer_energy_is_absolute_memory_included_for_snn_and_ann():
    """Item 12: at T=2, layer '2' (Linear 5->3) does 18 SyOPs: 0.9 x 18 compute + 18 x (w 5 + 2 x 5) memory;
    the ANN's layer '2' does 15 MACs: 4.6 x 15 + 15 x (5 + 5) + 3 outputs x 5."""
    snn, pattern = _tiny_snn()
    with Analyzer(snn, [2], energy_models=["45nm-fp32", "45nm-fp32+sram", "loihi"]) as a:
        a.run(pattern)
    r = a.report()
    layers = {layer.name: layer for layer in r.layers}
    assert layers["2"].energy_pj["45nm-fp32"] == pytest.approx(0.9 * 18)
    assert layers["2"].energy_pj["45nm-fp32+sram"] == pytest.approx(0.9 * 18 + 18 * 15)
    assert layers["2"].energy_pj["loihi"] == pytest.approx(23.6 * 18)
    for name in r.energy_models:
        assert sum(layer.energy_pj[name] for layer in r.layers) == pytest.approx(r.rows[-1].energy_pj[name])
    ann = {layer.name: layer for layer in r.ann_layers}
    assert (ann["0"].macs, ann["2"].macs) == (25, 15)
    assert ann["2"].energy_pj["45nm-fp32+sram"] == pytest.approx(4.6 * 15 + 15 * 10 + 3 * 5)
    for name in r.energy_models:
        assert sum(layer.energy_pj[name] for layer in r.ann_layers) == pytest.approx(r.ann.energy_pj[name])


def test_memory_aware_energy_against_a_hand_count():
    """The tiny net at T=2. Every memory here is under 8 KB, so each 32-bit access costs 5 pJ."""
    snn, pattern = _tiny_snn()
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
    snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [xtr[:256]], input_shape=(1, 8, 8), normalization=([0.3054], [0.3761]), options=ConversionOptions.plain())
    with Analyzer(snn, [4, 16], encoding="poisson") as a:
        a.run(xte[:32], yte[:32])
    for row in a.report().rows:
        low, high = row.seed_bound_pj["45nm-fp32"]
        first_layer_macs = 16 * 22 * 22  # conv 1->16, 3x3, pad 1: 22 x 22 real taps over the 8x8 outputs
        assert low == pytest.approx(row.T * 4.6 * first_layer_macs)
        assert low <= row.energy_pj["45nm-fp32"] <= high
    with Analyzer(snn, [4]) as a:
        a.run(xte[:8], yte[:8])
    assert a.report().rows[0].seed_bound_pj is None


def test_a_step_bias_makes_a_neuron_update_active():
    """An active update is one with a non-zero input current (a synaptic event or a bias) or a
    spike (annsnn.energy). The per-step bias is added inside the neuron, after the current
    the counter read, so bias-only updates were counted inactive (Loihi energy too low).
    Zero images: channel 0 gets 0.3 at steps 1 and 3 only, channel 1 nothing; v stays below
    1, so 64 neurons x 2 steps = 128 active updates per image, also at T = 6 (the last
    bias row, 0, repeats)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(128, 3, bias=False)).eval()
    snn, _ = ann_to_snn(model, [torch.rand(4, 1, 8, 8)], input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode("max"), v_init=0.0))
    layer = snn.neuron_layers()["1"]
    bias = torch.zeros(4, 2, 1, 1)
    bias[[0, 2], 0] = 0.3
    layer.set_step_bias(bias)
    with Analyzer(snn, [4, 6], energy_models=["loihi"]) as a:
        a.run(torch.zeros(2, 1, 8, 8))
    rows = {row.T: row for row in a.report().rows}
    assert rows[4].active_updates == rows[6].active_updates == 128
    assert rows[4].neuron_updates == 128 * 4 and rows[6].neuron_updates == 128 * 6
    loihi = rows[6].energy_pj["loihi"]
    assert loihi == pytest.approx(81.0 * 128 + 52.0 * (128 * 6 - 128) + 23.6 * (rows[6].synaptic_acs + rows[6].macs), rel=1e-9)


def test_energy_ann_names_the_ops_left_out_of_its_figure():
    """An op without a count is not priced: 'energy --ann' printed the energy without saying so
    (a padding='same' conv was such an op: 5x too little, no word)."""
    from annsnn.analyzer import AnnEnergy
    from cli.render import ann_energy_lines

    result = AnnEnergy(100, 120, 10, {"aten::cumsum": 2}, {"45nm-fp32": 469.0}, {}, {}, {})
    assert ann_energy_lines(result)[-1] == "note: ops without a count, left out of the energy: aten::cumsum x2"
    assert not any("without a count" in line for line in ann_energy_lines(AnnEnergy(100, 120, 10, {}, {"45nm-fp32": 469.0}, {}, {}, {})))


def test_memory_charges_the_bias_and_lateral_events_that_land_on_a_neuron_layer():
    """A per-step bias AC reads and writes a potential (the docstring's rule), as a neuron
    update does: +sram charged the updates of a neuron layer and nothing for its bias ACs.
    The tiny net at T=2 with a zero step bias on its IF layer (the same spikes): 5 neurons x
    2 steps bias ACs x (read + write) x 5 pJ = 100 pJ more than without it."""
    snn, pattern = _tiny_snn()
    with Analyzer(snn, [2], energy_models=["45nm-fp32", "45nm-fp32+sram"]) as a:
        a.run(pattern)
    before = a.report()
    (name, neurons), = snn.neuron_layers().items()
    neurons.set_step_bias(torch.zeros(2, 5))
    with Analyzer(snn, [2], energy_models=["45nm-fp32", "45nm-fp32+sram"]) as a:
        a.run(pattern)
    after = a.report()
    assert after.rows[0].synaptic_acs == before.rows[0].synaptic_acs  # the same spikes
    compute = after.rows[0].energy_pj["45nm-fp32"] - before.rows[0].energy_pj["45nm-fp32"]
    assert compute == pytest.approx(0.9 * 10)  # 10 bias ACs
    memory = (after.rows[0].energy_pj["45nm-fp32+sram"] - after.rows[0].energy_pj["45nm-fp32"]) - (before.rows[0].energy_pj["45nm-fp32+sram"] - before.rows[0].energy_pj["45nm-fp32"])
    assert memory == pytest.approx(10 * 2 * 5)
    layer = {l.name: l for l in after.layers}[name]
    assert layer.energy_pj["45nm-fp32+sram"] - layer.energy_pj["45nm-fp32"] == pytest.approx((10 + 10) * 2 * 5)  # updates and bias ACs
