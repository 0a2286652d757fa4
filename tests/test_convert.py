"""Fidelity: the SNN's accumulated output / T approaches the ANN's, on trained models."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from annsnn.convert import ConversionOptions
from annsnn.errors import UsageError
from annsnn.layers import SpikingMaxPool2d, IFNeurons, Rescale
from annsnn.modes import parse_mode
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate

from conftest import train_quick


def _agreement_and_error(snn, x, steps):
    with torch.no_grad():
        ann = snn.ann(x)
    result = simulate(snn, x, steps)
    agree = {t: float((result.predictions(t) == ann.argmax(1)).float().mean()) for t in steps}
    error = {t: float((result.outputs[t] / t - ann).norm() / ann.norm()) for t in steps}
    return agree, error


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _cnn_avg():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(128, 10))


def _cnn_max():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10))


class _TinyResNet(nn.Module):
    """Residual adds, option-A shortcut (slice + F.pad), functional ReLU, depthwise conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.c2(F.relu(self.c1(x))))
        y = self.down(x)
        x = F.relu(y + F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.mark.parametrize(
    "builder, pool_type, epochs, v_init",
    [(_mlp, None, 15, 0.0), (_cnn_avg, None, 15, 0.0), (_cnn_max, SpikingMaxPool2d, 15, 0.0), (_TinyResNet, Rescale, 40, 0.0), (_TinyResNet, Rescale, 15, 0.5)],
)
def test_trained_models_converge_to_their_ann(digits, builder, pool_type, epochs, v_init):
    (xtr, ytr), (xte, _) = digits
    torch.manual_seed(0)
    model = train_quick(builder(), xtr, ytr, epochs=epochs)
    options = ConversionOptions.plain(mode=parse_mode("99.99"), v_init=v_init)
    snn, report = ann_to_snn(model, [xtr[:512]], input_shape=(1, 8, 8), options=options)
    assert sum(isinstance(m, IFNeurons) for m in snn.graph.modules()) == len(report.layers)
    if pool_type is not None:
        assert any(isinstance(m, pool_type) for m in snn.graph.modules())
    agree, error = _agreement_and_error(snn, xte[:128], [8, 64, 512])
    assert error[512] < error[64] < error[8]
    assert agree[512] >= 0.99


def test_snn_emits_only_zero_one_spikes(digits):
    (xtr, ytr), (xte, _) = digits
    model = train_quick(_cnn_max(), xtr, ytr, epochs=3)
    snn, _ = ann_to_snn(model, [xtr[:256]], input_shape=(1, 8, 8), options=ConversionOptions.plain())
    seen = []
    hooks = [m.register_forward_hook(lambda mod, a, out: seen.append(out.unique())) for m in snn.graph.modules() if isinstance(m, (IFNeurons, SpikingMaxPool2d))]
    simulate(snn, xte[:16], [10])
    for h in hooks:
        h.remove()
    assert seen and all(set(values.tolist()) <= {0.0, 1.0} for values in seen)


def test_relu6_threshold_is_min_of_scale_and_six():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU6(), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
        model[2].weight.fill_(1.0)
        model[2].bias.zero_()
    x = torch.tensor([[10.0, 3.0], [8.0, 1.0]])
    snn, report = ann_to_snn(model, [x], input_shape=(2,), options=ConversionOptions.plain(mode=parse_mode("max")))
    assert report.layers[0].scale == 6.0  # max is 10, clipped to 6
    out = simulate(snn, x, [1000]).outputs[1000] / 1000
    assert torch.allclose(out, model(x), atol=0.02)


def test_channel_wise_and_v_init_options_are_recorded(digits):
    (xtr, ytr), (xte, _) = digits
    model = train_quick(_cnn_avg(), xtr, ytr, epochs=3)
    snn, report = ann_to_snn(model, [xtr[:256]], input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode("1/3"), channel_wise=True, v_init=0.5))
    assert report.options["channel_wise"] and report.options["v_init"] == 0.5
    assert all(m.v_init == 0.5 for m in snn.graph.modules() if isinstance(m, IFNeurons))
    agree, _ = _agreement_and_error(snn, xte[:64], [256])
    assert agree[256] > 0.8


def test_percentile_scale_is_below_max_and_clips_a_little(digits):
    (xtr, ytr), _ = digits
    model = train_quick(_mlp(), xtr, ytr, epochs=3)
    _, by_max = ann_to_snn(model, [xtr[:512]], input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode("max")))
    _, by_pct = ann_to_snn(model, [xtr[:512]], input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode("99")))
    _, by_pos = ann_to_snn(model, [xtr[:512]], input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode("99"), percentile_of="positive"))
    for a, b, c in zip(by_max.layers, by_pct.layers, by_pos.layers):
        assert b.scale < c.scale < a.scale == pytest.approx(a.max)
        assert a.clipped_fraction == 0.0
        # the 99th percentile of all activations clips 1% of them; of the positives, less
        assert b.clipped_fraction == pytest.approx(0.01, abs=0.002)
        assert 0 < c.clipped_fraction < b.clipped_fraction
    assert by_pos.options["percentile_of"] == "positive" and by_pct.options["percentile_of"] == "all"


def test_invalid_options():
    with pytest.raises(UsageError):
        ConversionOptions.plain(v_init=1.5)
    with pytest.raises(UsageError):
        ConversionOptions.plain(maxpool="min")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        ConversionOptions.plain(percentile_of="nonzero")  # type: ignore[arg-type]


def test_nan_weights_are_refused_before_calibration():
    model = _mlp().eval()
    model[1].weight.data[0, 0] = float("nan")
    calls = []

    def batches():
        calls.append(1)
        yield torch.rand(4, 1, 8, 8)

    with pytest.raises(UsageError, match="NaN"):
        ann_to_snn(model, batches(), input_shape=(1, 8, 8), options=ConversionOptions.plain())
    assert not calls


def _vgg19_reduced():
    import torchvision

    cfg = [v if v == "M" else v // 8 for v in torchvision.models.vgg.cfgs["E"]]
    features = torchvision.models.vgg.make_layers(cfg, batch_norm=True)
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def _mobilenet_v2():
    import torchvision

    return torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5)


def _digits32(x: torch.Tensor) -> torch.Tensor:
    """The 8x8 digits as 3x32x32 images, so torchvision's ImageNet-style nets keep every stage."""
    return F.interpolate(x, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)


def _train_digits32(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    """Deterministic Adam with a one-cycle schedule, batch 64."""
    torch.manual_seed(0)
    batches = (len(x) + 63) // 64
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * batches)
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=order).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            schedule.step()
    return model.eval()


def _structure_and_folding(model: nn.Module, snn, report, x: torch.Tensor, activations: int) -> None:
    assert len(report.layers) == activations and all(layer.spiking for layer in report.layers)
    assert sum(isinstance(m, IFNeurons) for m in snn.graph.modules()) == activations
    with torch.no_grad():
        assert torch.allclose(snn.ann(x[:16]), model(x[:16]), atol=1e-4)  # BN folding is exact


@pytest.mark.slow
def test_trained_torchvision_vgg19_reaches_99_percent_agreement_at_T512(digits):
    """VGG19's real layer structure (torchvision make_layers, width/8, BN: 16 conv + 5 max-pool
    as spiking max-pools), trained on digits at 3x32x32, converted with the defaults."""
    (xtr, ytr), (xte, yte) = digits
    model = _train_digits32(_vgg19_reduced(), _digits32(xtr), ytr, epochs=8)
    x = _digits32(xte[:256])
    with torch.no_grad():
        assert float((model(x).argmax(1) == yte[:256]).float().mean()) > 0.85  # it learned
    snn, report = ann_to_snn(model, [_digits32(xtr[:512])], input_shape=(3, 32, 32), options=ConversionOptions.plain(mode=parse_mode("99.99")))
    _structure_and_folding(model, snn, report, x, activations=16)
    assert sum(isinstance(m, SpikingMaxPool2d) for m in snn.graph.modules()) == 5
    agree, error = _agreement_and_error(snn, x, [32, 128, 512])
    assert error[512] < error[128] < error[32]
    assert agree[512] >= 0.99


MOBILENET_V2_DIGITS32 = Path(__file__).parent / "data" / "mobilenet_v2_w05_digits32.pt"


@pytest.mark.slow
def test_trained_torchvision_mobilenet_v2_converges_as_1_over_T(digits):
    """torchvision MobileNetV2 (width 0.5: ReLU6, depthwise convs, linear bottlenecks with
    residual adds, functional adaptive_avg_pool2d), trained on digits at 3x32x32 by
    tests/data/make_mobilenet_v2_digits32.py.

    Its 35 IF layers lie in series, so at T=512 the output still carries about 10% relative
    error and top-1 agreement is 96-99% depending on the training run (measured: not the
    issue's 99%). The error halves with every doubling of T, and agreement reaches 99% by
    T=2048. mode max (nothing clipped, so the error can go to 0) and v_init 0.5."""
    (xtr, _), (xte, yte) = digits
    model = _mobilenet_v2()
    model.load_state_dict(torch.load(MOBILENET_V2_DIGITS32, weights_only=True)["state_dict"])
    model.eval()
    x = _digits32(xte[:128])
    with torch.no_grad():
        assert float((model(x).argmax(1) == yte[:128]).float().mean()) > 0.9
    snn, report = ann_to_snn(model, [_digits32(xtr[:512])], input_shape=(3, 32, 32), options=ConversionOptions.plain(mode=parse_mode("max"), v_init=0.5))
    _structure_and_folding(model, snn, report, x, activations=35)
    steps = [256, 512, 1024, 2048]
    agree, error = _agreement_and_error(snn, x, steps)
    for t in steps[1:]:
        assert error[t] < 0.6 * error[t // 2]  # O(1/T)
    assert agree[512] >= 0.95
    assert agree[2048] >= 0.99


def _relu_outputs(model, x):
    """Each nn.ReLU's output on ``x``, from the user's model (independent of annsnn)."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, a, out: seen.append(out.detach().clone())) for m in model.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.fixture(scope="module")
def cnn_avg_3_epochs(digits):
    (xtr, ytr), _ = digits
    return train_quick(_cnn_avg(), xtr, ytr, epochs=3)


@pytest.mark.parametrize("mode", ["99", "1/3"])
def test_channel_wise_scales_match_an_independent_per_channel_statistic(digits, cnn_avg_3_epochs, mode):
    import numpy as np

    (xtr, ytr), _ = digits
    model = cnn_avg_3_epochs
    calib = xtr[:256]
    snn, report = ann_to_snn(model, [calib[:100], calib[100:]], input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode(mode), channel_wise=True))
    outputs = _relu_outputs(model, calib)
    assert len(outputs) == len(report.layers) == 2
    for layer, acts in zip(report.layers, outputs):
        per_channel = acts.transpose(0, 1).reshape(acts.shape[1], -1).double().numpy()
        assert len(layer.scales) == per_channel.shape[0]
        for c, values in enumerate(per_channel):
            top = float(values.max())
            if mode == "1/3":
                assert layer.scales[c] == pytest.approx(top / 3, rel=1e-6)
            else:
                expected = float(np.percentile(values, 99, method="inverted_cdf"))
                assert abs(layer.scales[c] - expected) <= 2 * top / 2048 + 1e-6 * top
        assert float(np.std(layer.scales)) > 0.05 * float(np.mean(layer.scales))  # the channels do differ
    # and the SNN uses them: the first conv's weights are divided by each output channel's scale
    ann_conv, snn_conv = snn.ann.get_submodule("0"), snn.graph.get_submodule("0")
    ratio = (ann_conv.weight / snn_conv.weight).flatten(1)
    assert torch.allclose(ratio, torch.tensor(report.layers[0].scales).view(-1, 1).expand_as(ratio), rtol=1e-4)


def test_a_percentile_of_zero_falls_back_to_the_positive_percentile_and_says_so():
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    x = torch.cat([-torch.ones(900), torch.linspace(0.01, 1, 100)]).view(-1, 1)  # 90% zeros after the ReLU
    _, report = ann_to_snn(model, [x], input_shape=(1,), options=ConversionOptions.plain(mode=parse_mode("50")))
    layer = report.layers[0]
    assert layer.scale == pytest.approx(0.5, abs=2 / 1024)  # median of the positives, not the max (1.0)
    assert "percentile of all values is 0" in layer.scale_rule and "90.0%" in layer.scale_rule
    assert any("positive values instead" in note for note in report.notes)


class _FoldNet(nn.Module):
    """A convolution, a depthwise (grouped) convolution and two linear layers, the first wide:
    every kind of weight :func:`annsnn.rules.scale.scale_weight` folds scales into."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.wide = nn.Linear(8 * 8 * 8, 2048)
        self.head = nn.Linear(2048, 10)

    def forward(self, x):
        x = F.relu(self.depthwise(F.relu(self.conv(x))))
        return self.head(F.relu(self.wide(x.flatten(1))))


def _fold_snn(monkeypatch, elements: int):
    import annsnn.rules.scale as rules

    monkeypatch.setattr(rules, "FOLD_ELEMENTS", elements, raising=False)
    calib = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    options = ConversionOptions.plain(mode=parse_mode("99.9"), channel_wise=True)
    return ann_to_snn(_FoldNet().eval(), [calib], input_shape=(3, 8, 8), options=options)[0]


def test_weight_folding_in_row_blocks_is_bit_identical(monkeypatch):
    """``W * s_in / s_out`` folded a block of output rows at a time gives, bit for bit, the
    weights of one pass over the whole tensor (every block in one: the earlier code)."""
    whole = _fold_snn(monkeypatch, 1 << 30).graph.state_dict()
    for elements in (1, 100, 5000):
        blocked = _fold_snn(monkeypatch, elements).graph.state_dict()
        assert whole.keys() == blocked.keys()
        for key in whole:
            assert torch.equal(whole[key], blocked[key]), (elements, key)
    assert not torch.equal(whole["wide.weight"], _FoldNet().wide.weight)  # scales were folded in


def test_weight_folding_never_copies_a_whole_weight_to_float64(monkeypatch):
    """The fold of a 1 M-weight layer holds at most one block of float64 weights at a time.
    Before, it made three whole-size float64 temporaries (2.5 GB on VGG-16's first linear
    layer, most of its conversion's peak memory). Every op's output is watched (a dispatch
    mode), so a float64 copy made by type promotion counts too, not only ``.double()``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    wide = 8 * 8 * 8 * 2048

    class LargestFloat64(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                    LargestFloat64.largest = max(LargestFloat64.largest, t.numel())
            return out

    import annsnn.rules.scale as rules

    monkeypatch.setattr(rules, "FOLD_ELEMENTS", 1 << 16, raising=False)
    calib = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    options = ConversionOptions.plain(mode=parse_mode("99.9"))  # layer-wise: no per-channel float64 histograms
    with LargestFloat64():
        ann_to_snn(_FoldNet().eval(), [calib], input_shape=(3, 8, 8), options=options)
    assert 0 < LargestFloat64.largest <= 1 << 16 < wide, LargestFloat64.largest
