"""torchvision classifiers through every stage (issue 13 item 3); the full sweep is `make coverage`."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from annsnn.convert import ConversionOptions
from annsnn.coverage import check_model
from annsnn.modes import parse_mode
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate


@pytest.fixture(autouse=True)
def _one_thread():
    """Whole torchvision models on small inputs: one thread is fastest, and on a busy 2-core
    machine two threads were 10x slower (shufflenet 76 s against 2 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _count(model: nn.Module, cls: type) -> int:
    return sum(1 for m in model.modules() if type(m) is cls)


def test_shufflenet_channel_shuffle_converts_fully_spiking():
    """``x.view(b, groups, c // groups, h, w)`` used to fail: view(): argument 'size' failed to unpack."""
    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    result = check_model("shufflenet_v2_x0_5", model, (3, 32, 32))
    assert result.status == {"convert": "ok", "simulate": "ok", "count": "ok", "save": "ok"}, result.error
    assert not result.hybrid and result.analog_ops == {}
    assert result.if_layers == _count(model, nn.ReLU)  # every ReLU module is called once


def test_mobilenet_v3_small_converts_with_hybrid_and_keeps_exactly_its_non_relu_ops_analog():
    from torchvision.ops.misc import SqueezeExcitation

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    result = check_model("mobilenet_v3_small", model, (3, 32, 32))
    assert result.status == {"convert": "ok", "simulate": "ok", "count": "ok", "save": "ok"}, result.error
    assert result.hybrid and "Hardswish" in result.spiking_error
    assert result.if_layers == _count(model, nn.ReLU)
    assert result.analog_ops == {
        "Hardswish": _count(model, nn.Hardswish),
        "Hardsigmoid": _count(model, nn.Hardsigmoid),
        "operator.mul": _count(model, SqueezeExcitation),  # scale * input
    }


def test_input_independent_position_bias_mlp_is_folded_and_goes_through_every_stage():
    """Swin V2's continuous position bias (an MLP with a ReLU on a stored table) used to
    reach the converter as a spiking layer: KeyError: features_1_0_attn_relative_coords_table."""
    from test_graph import _StoredTableBias

    torch.manual_seed(0)
    result = check_model("stored_table", _StoredTableBias(), (6,))
    assert result.status == {"convert": "ok", "simulate": "ok", "count": "ok", "save": "ok"}, result.error
    assert result.hybrid and result.if_layers == 0 and result.analog_ops == {"operator.add": 1}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "regnet_y_400mf", "convnext_tiny", "swin_t", "swin_v2_t", "alexnet"])
def test_more_architectures_go_through_every_stage(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10)
    result = check_model(name, model, (3, 64, 64))
    assert result.ok, result.error


def _storages(module: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in list(module.parameters()) + list(module.buffers()) if t.numel()}


def test_calibration_observes_the_canonical_ann_without_copying_its_weights():
    """The largest classifiers (600M parameters) must fit a few GB: the observed ANN shares
    the canonical ANN's weights and leaves its module tree unchanged."""
    from annsnn.convert import Calibrator
    from annsnn.graph import canonicalize

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    canonical = canonicalize(model, input_shape=(3, 6, 6))
    before = dict(canonical.module.named_modules()).keys()
    calibrator = Calibrator(canonical)
    assert _storages(canonical.module) <= _storages(calibrator.module)
    assert dict(canonical.module.named_modules()).keys() == before
    x = torch.rand(3, 3, 6, 6)
    assert torch.equal(calibrator.observe(x), canonical.module(x))
    assert set(calibrator.observers) == set(canonical.activations) and all(o.total > 0 for o in calibrator.observers.values())


def test_saving_an_snn_writes_its_tensors_without_copying_them(tmp_path, monkeypatch):
    from annsnn import artifact

    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    x = torch.rand(4, 5)
    snn, _ = ann_to_snn(model, [x], input_shape=(5,), options=ConversionOptions.plain(mode=parse_mode("max")))
    written = {}
    real_save = torch.save
    monkeypatch.setattr(artifact.torch, "save", lambda payload, path: (written.update(payload), real_save(payload, path)))
    artifact.save_snn(snn, tmp_path / "m.snn.pt")
    saved = {t.untyped_storage().data_ptr() for key in ("snn_state", "ann_state") for t in written[key].values() if t.numel()}
    assert saved <= _storages(snn.graph) | _storages(snn.ann)
    loaded = artifact.load_snn(tmp_path / "m.snn.pt")
    assert torch.equal(simulate(loaded, x, 3).outputs[3], simulate(snn, x, 3).outputs[3])
