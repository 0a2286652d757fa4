"""annsnn.evaluation: the library loop behind evaluate/energy, its events and its resume key."""
import dataclasses

import pytest
import torch

from annsnn.data import load_dataset, make_loader
from annsnn.evaluation import BatchDone, DataSpec, EvalSpec, Planned, ProgressDiscarded, ProgressStore, Resumed, evaluate
from annsnn.model_files import load_model
from annsnn.modes import parse_mode
from annsnn.pipeline import ann_to_snn
from annsnn.convert import ConversionOptions
from annsnn.zoo import embedded_checkpoint


@pytest.fixture(scope="module")
def snns(digits):
    (xtr, _), _ = digits
    model = load_model(embedded_checkpoint()).module
    out = {}
    for mode in ("99.99", "max"):
        out[mode], _ = ann_to_snn(model, [xtr[:128]], input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode(mode)), normalization=([0.3054], [0.3761]))
    return out


BASE_DATA = DataSpec("digits", "test", 16, 8)
BASE_SPEC = EvalSpec((2, 3), "direct", 0, ("45nm-fp32",), False, None, "cpu")


def _loader(data: DataSpec):
    return make_loader(load_dataset(data.dataset, data.split), data.batch_size, data.samples)


class _Stop(Exception):
    pass


def _interrupted(snn, store, data=BASE_DATA, spec=BASE_SPEC):
    """A run stopped after its first batch: the store then holds one batch of progress."""

    def stop(event):
        if isinstance(event, BatchDone):
            raise _Stop

    with pytest.raises(_Stop):
        evaluate(snn, _loader(data), data, spec, store=store, on_event=stop)
    assert store.path.is_file()


def test_events_and_an_interrupted_run_resumes_to_the_same_numbers(snns, tmp_path):
    snn = snns["99.99"]
    events = []
    whole = evaluate(snn, _loader(BASE_DATA), BASE_DATA, BASE_SPEC, on_event=events.append)
    assert events == [Planned(2, 2, 3, 16), BatchDone(0, 1, 2, 8), BatchDone(1, 2, 2, 8)]  # the bar counts images
    store = ProgressStore(tmp_path / "p.pt")
    _interrupted(snn, store)
    events = []
    resumed = evaluate(snn, _loader(BASE_DATA), BASE_DATA, BASE_SPEC, store=store, resume=True, on_event=events.append)
    assert events[:2] == [Resumed(1, 2), Planned(1, 2, 3, 8)] and resumed.resumed_batches == 1 and resumed.discarded == ()
    assert resumed.result.to_dict() == whole.result.to_dict()
    assert not store.path.exists()


CHANGES = {
    "snn (other conversion options and scales)": ("snn_sha256", lambda d, s: ("max", d, s)),
    "dataset": ("data.dataset", lambda d, s: ("99.99", dataclasses.replace(d, dataset="mnist"), s)),
    "split": ("data.split", lambda d, s: ("99.99", dataclasses.replace(d, split="train"), s)),
    "samples": ("data.samples", lambda d, s: ("99.99", dataclasses.replace(d, samples=24), s)),
    "batch size": ("data.batch_size", lambda d, s: ("99.99", dataclasses.replace(d, batch_size=12), s)),
    "T list": ("eval.T", lambda d, s: ("99.99", d, dataclasses.replace(s, T=(2, 4)))),
    "encoding": ("eval.encoding", lambda d, s: ("99.99", d, dataclasses.replace(s, encoding="poisson"))),
    "seed": ("eval.seed", lambda d, s: ("99.99", d, dataclasses.replace(s, seed=1))),
    "chunk": ("eval.chunk", lambda d, s: ("99.99", d, dataclasses.replace(s, chunk=1))),
    "energy models": ("eval.energy_models", lambda d, s: ("99.99", d, dataclasses.replace(s, energy_models=("loihi",)))),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_resume_after_any_change_starts_afresh(snns, tmp_path, change):
    field, make = CHANGES[change]
    store = ProgressStore(tmp_path / "p.pt")
    _interrupted(snns["99.99"], store)
    mode, data, spec = make(BASE_DATA, BASE_SPEC)
    loader_data = data if data.dataset == "digits" else dataclasses.replace(data, dataset="digits")  # same tensors, other name
    events = []
    outcome = evaluate(snns[mode], _loader(loader_data), data, spec, store=store, resume=True, on_event=events.append)
    assert field in outcome.discarded and outcome.resumed_batches == 0
    assert isinstance(events[0], ProgressDiscarded) and not any(isinstance(e, Resumed) for e in events)
    fresh = evaluate(snns[mode], _loader(loader_data), data, spec)
    assert outcome.result.to_dict() == fresh.result.to_dict()


def test_ann_counts_fail_before_any_batch_is_simulated(snns, monkeypatch):
    import annsnn.counting as counting

    def broken(*args, **kwargs):
        raise KeyError("Requested module name is not among the descendants of the analyzed model.")

    monkeypatch.setattr(counting, "count_ann", broken)
    simulated = []
    monkeypatch.setattr("annsnn.analyzer.simulate", lambda *a, **k: simulated.append(1))
    with pytest.raises(KeyError):
        evaluate(snns["99.99"], _loader(BASE_DATA), BASE_DATA, BASE_SPEC)
    assert simulated == []


def test_an_onnx_model_evaluates_or_fails_before_simulating(tmp_path):
    from torch import nn

    from annsnn.artifact import load_snn, save_snn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)).eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(tmp_path / "m.onnx"), dynamo=False, opset_version=17)
    from onnx2torch import convert as onnx2torch_convert  # annsnn's own importer sanitizes names

    module = onnx2torch_convert(str(tmp_path / "m.onnx")).eval()
    assert any("/" in name for name, _ in module.named_modules())  # onnx2torch names such as '0/Conv'
    snn, _ = ann_to_snn(module, [torch.rand(32, 1, 8, 8)], input_shape=(1, 8, 8), options=ConversionOptions.plain())
    save_snn(snn, tmp_path / "m.snn.pt")
    snn = load_snn(tmp_path / "m.snn.pt")
    events = []
    spec = dataclasses.replace(BASE_SPEC, count=True)
    try:
        outcome = evaluate(snn, _loader(BASE_DATA), BASE_DATA, spec, on_event=events.append)
    except Exception:
        assert not any(isinstance(e, (Planned, BatchDone)) for e in events), "failed after simulating"
    else:
        from annsnn.counting import count_ann

        assert outcome.result.samples == 16 and outcome.result.ann.macs == count_ann(model, (1, 8, 8)).macs  # names do not matter


def _numpy_bytes(tensor: torch.Tensor) -> bytes:
    """The reference: the tensor's bytes as numpy lays them out (C order, native endianness)."""
    return tensor.detach().cpu().numpy().tobytes()


@pytest.mark.parametrize("value", [torch.tensor(0.75), torch.tensor(3, dtype=torch.int64), torch.tensor(True),
                                   torch.arange(6, dtype=torch.float64).reshape(2, 3).t(), torch.zeros(0)])
def test_tensor_bytes_of_0_dim_and_strided_tensors_equal_numpys(value):
    """Issue 24 item 5: `.view(torch.uint8)` on a 0-dim tensor raised 'self.dim() cannot be 0 to
    view Float as Byte' (torch 2.11 and 2.14), so the resume key of an SNN holding a scalar
    buffer failed. The bytes hashed are numpy's, for every shape."""
    from annsnn.evaluation import tensor_bytes

    assert tensor_bytes(value) == _numpy_bytes(value)


def test_fingerprint_of_an_snn_with_a_0_dim_buffer(snns):
    """A scalar buffer (as a plain-normalization SNN's scalar rescale holds) is hashed by value."""
    import copy

    from annsnn.evaluation import snn_fingerprint

    first, second = copy.deepcopy(snns["max"]), copy.deepcopy(snns["max"])
    first.graph.register_buffer("scalar", torch.tensor(0.5))
    second.graph.register_buffer("scalar", torch.tensor(0.5))
    assert snn_fingerprint(first) == snn_fingerprint(second)
    second.graph.scalar.fill_(0.25)
    assert snn_fingerprint(first) != snn_fingerprint(second)


def test_analyze_of_batches_in_hand_gives_the_numbers_of_evaluate(snns):
    """``analyze`` (the loop benchmarks and reports call) scores the same batches to the same
    numbers as ``evaluate`` (the CLI's loop); batches without labels are scored without accuracy."""
    from annsnn.evaluation import analyze

    snn = snns["99.99"]
    batches = list(_loader(BASE_DATA))
    whole = evaluate(snn, _loader(BASE_DATA), BASE_DATA, dataclasses.replace(BASE_SPEC, count=True))
    assert analyze(snn, batches, BASE_SPEC.T, energy_models=BASE_SPEC.energy_models).to_dict() == whole.result.to_dict()
    unlabelled = analyze(snn, [x for x, _ in batches], BASE_SPEC.T, count=False)
    assert [row.top1 for row in unlabelled.rows] == [None, None]
