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

_EXACT = ConversionOptions(mode=parse_mode("max"), v_init=0.5)


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
