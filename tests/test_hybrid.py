"""Hybrid mode: analog ops compute on the running rate of their inputs, so the SNN
converges to the ANN as T grows (issue 11 item 6, issue 13 item 4)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from annsnn import ConversionOptions, ann_to_snn, parse_mode, simulate
from annsnn.artifact import load_snn, save_snn


def _convert(model: nn.Module, x: torch.Tensor, mode: str = "max"):
    options = ConversionOptions(mode=parse_mode(mode), hybrid=True)
    snn, report = ann_to_snn(model.eval(), [x], input_shape=tuple(x.shape[1:]), options=options)
    return snn, report


def _errors(snn, model, x, steps, encoding="direct"):
    with torch.no_grad():
        ann = model(x)
    res = simulate(snn, x, steps, encoding=encoding)
    return {t: float((res.outputs[t] / t - ann).abs().max()) for t in steps}, ann


# Lipschitz constants of the analog activations: sup |f'|.
_GELU_LIPSCHITZ = 1.1289  # GELU'(x) peaks at x = sqrt(2) with 1.12899...


@pytest.mark.parametrize(
    "act, lipschitz",
    [(nn.Tanh(), 1.0), (nn.GELU(), _GELU_LIPSCHITZ), (nn.LeakyReLU(0.2), 1.0)],
    ids=["tanh", "gelu", "leakyrelu0.2"],
)
def test_analog_activation_mlp_converges_within_closed_form_bound(act, lipschitz):
    """Linear -> ReLU (IF) -> Linear -> f (analog) -> Linear.

    Direct input: the IF layer gets the constant current ``z/λ`` each step; with v_init 0 and
    λ = max (no clipping) its spike count N_t obeys ``|λ N_t/t - relu(z)| <= λ/t``. The analog op's
    cumulative output is ``t f(r_t)``, so the readout/T is ``W3 f(r_T) + b3`` with
    ``|r_T - r| <= |W2| λ/T``; hence ``|err| <= |W3| L |W2| λ / T`` (row sums of |W|).
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), act, nn.Linear(12, 4)).eval()
    x = torch.randn(32, 6)
    snn, report = _convert(model, x)
    lam = report.layers[0].scale
    with torch.no_grad():
        assert lam == pytest.approx(float(torch.relu(model[0](x)).max()), rel=1e-6)
    w2, w3 = model[2].weight.abs(), model[4].weight.abs()
    bound_per_step = float((w3 @ w2.sum(1, keepdim=True)).max()) * lipschitz * lam
    steps = [10, 100, 1000]
    errors, _ = _errors(snn, model, x, steps)
    for t in steps:
        assert errors[t] <= bound_per_step / t * (1 + 1e-4) + 1e-5, (t, errors[t], bound_per_step / t)
    assert errors[1000] < errors[10] / 20  # falls like 1/T
    assert errors[1000] < 0.02


def test_tanh_net_with_spiking_layers_after_the_analog_op_converges():
    """Issue 11 item 6: a Tanh net stayed 0.42 away from its ANN at T = 10,000."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(5, 24), nn.ReLU(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 3)
    ).eval()
    x = torch.randn(64, 5)
    snn, _ = _convert(model, x)
    errors, ann = _errors(snn, model, x, [16, 256, 4096])
    assert errors[256] < errors[16] / 4
    assert errors[4096] < errors[256]
    assert errors[4096] < 0.01 * float(ann.abs().max())


@pytest.mark.parametrize("act", [nn.Tanh(), nn.GELU(), nn.LeakyReLU(0.2), nn.ELU(0.5), nn.Softplus(beta=2.0, threshold=5.0)], ids=lambda a: type(a).__name__)
def test_hybrid_save_load_is_bit_identical_and_keeps_configuration(tmp_path, act):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), act, nn.Linear(8, 3)).eval()
    x = torch.randn(16, 4)
    snn, _ = _convert(model, x)
    path = tmp_path / "m.snn.pt"
    save_snn(snn, path)
    loaded = load_snn(path)
    a = simulate(snn, x, [1, 7, 50]).outputs
    b = simulate(loaded, x, [1, 7, 50]).outputs
    for t in a:
        assert torch.equal(a[t], b[t])
    assert torch.equal(snn.ann(x), loaded.ann(x))
    reloaded = [m for m in list(loaded.ann.modules()) + list(loaded.graph.modules()) if type(m) is type(act)]
    assert len(reloaded) == 2  # in the ANN and inside the SNN's AnalogOp
    for module in reloaded:
        for key in getattr(type(act), "__constants__", []):
            assert getattr(module, key) == getattr(act, key), key


def test_analog_ops_are_counted_as_macs_per_step_closed_form():
    """GELU on 12 values: 12 ops per step; an SE multiply x * gate on [4, 3, 3]: 36 per step;
    the Linear after the analog op is fed analog values: 12 * 4 dense MACs per step."""
    from annsnn.counting import SnnCounter

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.GELU(), nn.Linear(12, 4)).eval()
    x = torch.randn(8, 6)
    snn, _ = _convert(model, x)
    counter = SnnCounter(snn, "direct", 5)
    analog = [n for n, layer in counter.layers.items() if layer.type.startswith("analog")]
    assert len(analog) == 1
    counter.attach(8)
    res = simulate(snn, x, 5, on_chunk=counter.on_chunk)
    counter.detach()
    assert res.outputs[5].shape == (8, 4)
    assert [float(v) for v in counter.layers[analog[0]].macs] == [12 * 8] * 5
    assert [float(v) for v in counter.layers["4"].macs] == [12 * 4 * 8] * 5
    split = counter.work_split()
    assert split.spike_driven_macs == 16 * 12  # layer 2 is driven by the IF layer's spikes
    assert split.analog_macs == 6 * 16 + 12 + 12 * 4  # first layer (analog input), GELU, analog-fed last layer
    assert split.analog_share == pytest.approx(156 / (156 + 192))
