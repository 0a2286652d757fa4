"""Conversions that must be exact w.r.t. the user's ORIGINAL model (issue 11, items 3, 4, 5, 26)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from annsnn.convert import ConversionOptions
from annsnn.errors import UsageError
from annsnn.layers import Rescale
from annsnn.modes import parse_mode
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate

_EXACT = ConversionOptions.plain(mode=parse_mode("max"), v_init=0.5)


def _relative_error(snn, model, x, T=2000):
    with torch.no_grad():
        ann = model(x)
    out = simulate(snn, x, [T]).outputs[T] / T
    return float((out - ann).norm() / ann.norm())


class SharedConv(nn.Module):
    """One conv module called at two sites: ``relu(c(relu(c(h))))``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = F.relu(self.bn(self.c(F.relu(self.c(h)))))
        return self.fc(h.flatten(1))


def _randomized(model):
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(0.0, 0.3)
    return model.eval()


def test_module_called_twice_converts_to_the_original_model():
    model = _randomized(SharedConv())
    x = torch.rand(64, 1, 8, 8)
    snn, _ = ann_to_snn(model, [x], input_shape=(1, 8, 8), options=_EXACT)
    with torch.no_grad():
        assert torch.allclose(snn.ann(x), model(x), atol=1e-5)  # canonical == original
    assert _relative_error(snn, model, x[:16]) < 0.01


class PadFirst(nn.Module):
    """Option-A shortcut as the FIRST operand of the add (and as the second, ``swap``)."""

    def __init__(self, swap: bool):
        super().__init__()
        self.swap = swap
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        h = F.relu(self.stem(x))
        short = F.pad(h[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))
        y = self.down(h) + short if self.swap else short + self.down(h)
        return self.fc(y.flatten(1))  # the add feeds no neuron: it picks its own scale


@pytest.mark.parametrize("swap", [False, True])
def test_residual_add_is_exact_in_either_operand_order(swap):
    torch.manual_seed(0)
    model = PadFirst(swap).eval()
    x = torch.rand(32, 1, 8, 8)
    snn, _ = ann_to_snn(model, [x], input_shape=(1, 8, 8), options=_EXACT)
    assert _relative_error(snn, model, x[:16]) < 0.01


class PadBeforeOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x):
        return F.pad(F.relu(self.fc(x)), (0, 4))


def test_pad_before_output_keeps_a_scalar_rescale():
    torch.manual_seed(0)
    model = PadBeforeOutput().eval()
    x = torch.rand(64, 16)
    snn, report = ann_to_snn(model, [x], input_shape=(16,), options=_EXACT)
    factors = [m.factor for m in snn.graph.modules() if isinstance(m, Rescale)]
    assert len(factors) == 1 and factors[0].dim() == 0
    assert float(factors[0]) == pytest.approx(report.layers[0].scale, rel=1e-6)
    assert _relative_error(snn, model, x[:16]) < 0.01


class InplaceDiscarded(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        y = self.a(x)
        F.relu(y, inplace=True)  # result discarded: y itself is now rectified
        return self.b(y)


def test_discarded_inplace_relu_is_kept():
    torch.manual_seed(0)
    model = InplaceDiscarded().eval()
    x = torch.randn(64, 6)
    snn, report = ann_to_snn(model, [x], input_shape=(6,), options=_EXACT)
    assert len(report.layers) == 1
    with torch.no_grad():
        assert torch.allclose(snn.ann(x), model(x), atol=1e-6)
    assert _relative_error(snn, model, x[:16]) < 0.01


def test_weight_norm_layer_converts_to_the_original_model():
    torch.manual_seed(0)
    wn = torch.nn.utils.parametrizations.weight_norm
    model = nn.Sequential(wn(nn.Linear(6, 8)), nn.ReLU(), wn(nn.Linear(8, 3))).eval()
    x = torch.randn(64, 6)
    snn, _ = ann_to_snn(model, [x], input_shape=(6,), options=_EXACT)
    with torch.no_grad():
        assert torch.allclose(snn.ann(x), model(x), atol=1e-5)
    assert _relative_error(snn, model, x[:16]) < 0.01
    assert any(isinstance(p, torch.nn.utils.parametrize.ParametrizationList) for p in model.modules())  # user's model untouched


def test_a_wrong_canonicalization_is_refused_naming_the_node():
    """Simulate a canonicalization bug: BatchNorm folding that gets the bias wrong (the
    Conv2d entry's fold rule, replaced in a registry copy)."""
    import dataclasses

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from annsnn.ops import default_registry

    def wrong_fuse(conv, bn):
        fused = fuse_conv_bn_eval(conv, bn)
        fused.bias.data += 0.5
        return fused

    registry = default_registry()
    registry.register(dataclasses.replace(registry["Conv2d"], fold_batchnorm=wrong_fuse), replace=True)
    model = _randomized(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)))
    calls = []

    def batches():
        for _ in range(3):
            calls.append(1)
            yield torch.rand(8, 1, 8, 8)

    with pytest.raises(UsageError) as info:
        ann_to_snn(model, batches(), input_shape=(1, 8, 8), registry=registry, options=ConversionOptions.plain())
    message = str(info.value)
    assert "'_0'" in message and "'_1'" in message and "\n" not in message  # conv node, standing for the BN's output
    assert len(calls) == 1  # stopped at the first batch


def test_equivalence_is_recorded_in_report_and_meta():
    model = _randomized(SharedConv())
    x = torch.rand(16, 1, 8, 8)
    snn, report = ann_to_snn(model, [x, x], input_shape=(1, 8, 8), options=ConversionOptions.plain())
    eq = report.equivalence
    with torch.no_grad():
        expected = float((snn.ann(x) - model(x)).abs().max())
        scale = float(model(x).abs().max())
    assert eq.samples == 16 and eq.max_abs_deviation == pytest.approx(expected, abs=1e-7)
    assert eq.output_scale == pytest.approx(scale, rel=1e-6) and eq.relative_deviation <= eq.rtol == 1e-4
    assert snn.meta["equivalence"]["max_abs_deviation"] == eq.max_abs_deviation
    assert any("one copy per site" in note for note in report.notes)


def test_maxpool_avg_is_checked_against_the_model_with_exactly_that_replacement():
    """--maxpool avg changes the ANN on purpose: the equivalence reference is the user's model
    with its max-pools (module and functional) replaced by average pools, nothing else."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            h = self.pool(torch.relu(self.conv(x)))
            return self.fc(F.max_pool2d(h, 2).flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.rand(16, 1, 8, 8)
    snn, report = ann_to_snn(net, [x], input_shape=(1, 8, 8), options=ConversionOptions.plain(maxpool="avg"))
    with torch.no_grad():
        h = F.avg_pool2d(torch.relu(net.conv(x)), 2)
        expected = net.fc(F.avg_pool2d(h, 2).flatten(1))
        assert torch.allclose(snn.ann(x), expected, atol=1e-5)
        assert not torch.allclose(net(x), expected, atol=1e-3)  # the replacement does change the ANN
    assert report.equivalence is not None and report.equivalence.relative_deviation < 1e-5
