"""The typed SNN record: validation of every value, versions, and format-1 files."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from annsnn.artifact import load_snn, save_snn
from annsnn.errors import UsageError
from annsnn.record import CALIBRATIONS, RECORD_VERSION, Calibration, Normalization, SnnRecord, Source, calibration_method

V1_SNN = Path(__file__).parent / "data" / "digits_stepbias_v1.snn.pt"


def _v1_meta() -> dict:
    return json.loads(torch.load(str(V1_SNN), map_location="cpu", weights_only=True)["meta"])


def test_a_format_1_meta_becomes_a_record_and_back_unchanged():
    meta = _v1_meta()
    record = SnnRecord.from_meta(meta)
    assert record.input_shape == (1, 8, 8) and record.calibration.T == 4
    assert record.calibration.method == "step-bias" and record.calibration.readout_delay == meta["readout_delay"]
    assert record.source == Source("digits_cnn.pt", "checkpoint", "digits_cnn")
    assert record.meta() == meta


def test_a_format_1_file_loads_and_saves_as_format_2_with_the_same_record(tmp_path):
    snn = load_snn(V1_SNN)
    target = tmp_path / "m.snn.pt"
    save_snn(snn, target)
    payload = torch.load(str(target), map_location="cpu", weights_only=True)
    assert payload["version"] == 2 and "meta" not in payload
    assert json.loads(payload["record"])["record_version"] == RECORD_VERSION
    again = load_snn(target)
    assert again.record == snn.record
    x = torch.rand(3, 1, 8, 8)
    from annsnn import simulate

    a, b = simulate(snn, x, [2, 4]), simulate(again, x, [2, 4])
    assert all(torch.equal(a.outputs[t], b.outputs[t]) for t in (2, 4))


def test_the_record_round_trips_through_its_dict():
    record = SnnRecord.from_meta(_v1_meta())
    assert SnnRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_every_calibration_name_is_found_from_its_options():
    for name, (threshold, bias) in CALIBRATIONS.items():
        assert calibration_method({"threshold": threshold, "bias": bias}) == name


@pytest.mark.parametrize("change", [
    {"input_shape": (1, 0, 8)}, {"input_shape": (1, 8.0, 8)}, {"input_shape": (True, 8, 8)}, {"input_shape": ()},
    {"max_activation_numel": 0}, {"max_activation_numel": "big"},
    {"calibration": "T=4"}, {"dataset": {"name": "digits", "num_classes": 0}},
    {"equivalence": {"max_abs_deviation": float("nan")}}, {"options": {"v_init": float("inf")}},
], ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))!r}")
def test_a_bad_value_is_refused_when_the_record_is_built(change):
    record = SnnRecord.from_meta(_v1_meta())
    with pytest.raises(UsageError):
        dataclasses.replace(record, **change)


@given(T=st.one_of(st.integers(-10**9, 0), st.integers(100_001, 10**12), st.floats(allow_nan=True), st.text(max_size=3), st.booleans()))
def test_a_calibrated_T_outside_1_to_100000_or_not_an_int_is_refused(T):
    with pytest.raises(UsageError):
        Calibration(T=T)


@pytest.mark.parametrize("mean,std", [((0.5,), (0.0,)), ((float("nan"),), (1.0,)), ((0.5, 0.5), (1.0,))])
def test_a_bad_normalization_is_refused(mean, std):
    with pytest.raises(UsageError):
        Normalization(mean, std)


def test_a_record_version_this_annsnn_does_not_know_is_refused():
    data = SnnRecord.from_meta(_v1_meta()).to_dict()
    data["record_version"] = 3
    with pytest.raises(UsageError, match="record version 3"):
        SnnRecord.from_dict(data)


@pytest.mark.parametrize("delay", [-1, 1.5, "2", None])
def test_a_readout_delay_that_is_not_an_int_from_0_is_refused(delay):
    with pytest.raises(UsageError, match="readout_delay"):
        Calibration(T=4, readout_delay=delay)
