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
    w2, w3 = model[2].weight.detach().abs(), model[4].weight.detach().abs()
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


class _SEBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(h.mean((2, 3), keepdim=True)))))
        return h * gate  # squeeze-excitation multiply: two time-varying operands


def _se_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), _SEBlock(8), nn.Conv2d(8, 8, 3, stride=2), nn.SiLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 5))


class _ConvNeXtBlock(nn.Module):
    """torchvision's CNBlock pattern: depthwise conv, LayerNorm (channels last), Linear, GELU,
    Linear, layer scale (a stored Parameter), stochastic depth, residual."""

    def __init__(self, c: int) -> None:
        super().__init__()
        from torchvision.ops import StochasticDepth

        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.layer_scale = nn.Parameter(torch.full((c, 1, 1), 0.5))
        self.drop = StochasticDepth(0.1, "row")

    def forward(self, x):
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.pw2(nn.functional.gelu(self.pw1(y))).permute(0, 3, 1, 2)
        return x + self.drop(self.layer_scale * y)


def _convnext() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), nn.ReLU(), _ConvNeXtBlock(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def _vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5)
    for block in vit.encoder.layers:
        block.mlp[1] = nn.ReLU()  # spiking MLP; LayerNorm, attention, GELU-free residual stream stay analog
    nn.init.normal_(vit.heads.head.weight)  # torchvision zero-initialises the head
    return vit


@pytest.mark.parametrize("make, kinds", [(_se_cnn, {"mul", "sigmoid", "SiLU"}), (_convnext, {"LayerNorm", "gelu", "mul"}), (_vit, {"MultiheadAttention", "LayerNorm", "add", "expand"})], ids=["se-cnn", "convnext-block", "vit"])
def test_networks_with_analog_ops_converge_to_their_ann(tmp_path, make, kinds):
    torch.manual_seed(4)
    model = make().eval()
    x = torch.rand(8, 3, 16, 16)
    snn, report = _convert(model, x, mode="99.9")
    kept = {item.split("(")[-1].rstrip(")").split(".")[-1] for item in report.analog}
    assert kinds <= kept, kept
    errors, ann = _errors(snn, model, x, [8, 64, 512])
    scale = float(ann.abs().max())
    assert errors[64] < errors[8] and errors[512] < errors[64], errors
    assert errors[512] < 0.05 * scale, (errors, scale)
    path = tmp_path / "m.snn.pt"
    save_snn(snn, path)
    assert torch.equal(simulate(load_snn(path), x, 9).outputs[9], simulate(snn, x, 9).outputs[9])


def _digits_vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(image_size=8, patch_size=2, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10, dropout=0.0)
    vit.conv_proj = nn.Conv2d(1, 32, 2, 2)  # 8x8 grey digits: 16 patches
    for block in vit.encoder.layers:
        block.mlp[1] = nn.ReLU()  # spiking MLP; LayerNorm and attention stay analog
    return vit


@pytest.mark.slow
def test_tiny_vit_trained_on_digits_is_within_one_point_of_its_ann(digits):
    from conftest import train_quick

    (x_train, y_train), (x_test, y_test) = digits
    torch.manual_seed(0)
    model = train_quick(_digits_vit(), x_train, y_train, epochs=40, lr=3e-3)
    with torch.no_grad():
        ann_acc = float((model(x_test).argmax(1) == y_test).float().mean())
    assert ann_acc > 0.85
    options = ConversionOptions(mode=parse_mode("99.99"), hybrid=True)
    snn, report = ann_to_snn(model, [x_train], input_shape=(1, 8, 8), options=options)
    assert len(snn.neuron_layers()) == 1 and any("MultiheadAttention" in a for a in report.analog)
    T = 64
    snn_acc = float((simulate(snn, x_test, T).predictions(T) == y_test).float().mean())
    assert abs(snn_acc - ann_acc) <= 0.01, (ann_acc, snn_acc)


@pytest.mark.parametrize("target", ["__class__", "a.__init__.__globals__", "x=__import__('os')", "missing"])
def test_snn_file_reading_a_bad_stored_tensor_is_refused(target):
    from annsnn.artifact import graph_from_spec
    from annsnn.ops import default_registry
    from annsnn.errors import UsageError

    spec = {
        "modules": {},
        "nodes": [
            {"name": "x", "op": "placeholder", "target": "x", "args": [], "kwargs": {}},
            {"name": "a", "op": "get_attr", "target": target, "args": [], "kwargs": {}},
            {"name": "output", "op": "output", "target": "output", "args": [{"node": "a"}], "kwargs": {}},
        ],
    }
    with pytest.raises(UsageError):
        graph_from_spec(spec, {}, default_registry())


@pytest.mark.parametrize("kind, target", [("function", "os.system"), ("method", "__reduce__"), ("module", "Conv2d"), ("other", "F.gelu")])
def test_analog_op_from_a_file_names_only_allowlisted_ops(kind, target):
    from annsnn.analog import AnalogOp
    from annsnn.errors import UsageError
    from annsnn.ops import default_registry

    config = {"kind": kind, "target": target, "template": {"tuple": [{"tuple": [{"slot": ["input", 0]}]}, {"dict": {}}]},
              "streams": [True], "unit": [True], "n_consts": 0, "select": None, "module": {}}
    with pytest.raises(UsageError):
        AnalogOp.from_config(config, {}, "", registry=default_registry())


def test_cli_convert_hybrid_json_lists_analog_ops_without_nan(capsys, tmp_path):
    """Issue 11 item 22: `convert --hybrid --json` exited 1 on a NaN max of the analog row."""
    import json

    from annsnn.cli.main import main

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.LeakyReLU(0.3), nn.Linear(32, 10)).eval()
    torch.save(model, tmp_path / "m.pt")
    args = ["convert", str(tmp_path / "m.pt"), "--trust", "--hybrid", "--data", "digits", "--input-shape", "1,8,8",
            "--calib-samples", "64", "--readout-delay", "0", "--out", str(tmp_path / "m.snn.pt"), "--json", str(tmp_path / "c.json")]
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    assert code == 0, capsys.readouterr().err
    layers = json.loads((tmp_path / "c.json").read_text())["report"]["layers"]
    analog = [layer for layer in layers if not layer["spiking"]]
    assert [(a["kind"], a["op"], a["label"], a["max"]) for a in analog] == [("analog", "LeakyReLU", "analog LeakyReLU", None)]
    loaded = load_snn(tmp_path / "m.snn.pt")
    assert [m.op.negative_slope for m in loaded.graph.modules() if type(m).__name__ == "AnalogOp"] == [0.3]
