"""Counts against hand-computed values, fvcore against closed forms, and spikingjelly's counter."""
import math

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from torch import nn

from annsnn.analyzer import Analyzer
from annsnn.convert import ConversionOptions
from annsnn.counting import SnnCounter, count_ann, dense_macs
from annsnn.errors import UsageError
from annsnn.modes import parse_mode
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate


def _identity_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1, groups=channels)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    return conv


def _count(model: nn.Module, pattern: torch.Tensor, T: int = 5) -> SnnCounter:
    """Convert with 'max' on the pattern itself, so the first IF layer spikes exactly the
    pattern at every step (binary input, scale 1), and count T steps."""
    snn, _ = ann_to_snn(model.eval(), [pattern], input_shape=tuple(pattern.shape[1:]), options=ConversionOptions.plain(mode=parse_mode("max")))
    counter = SnnCounter(snn, "direct", T)
    counter.attach(pattern.shape[0])
    simulate(snn, pattern, [T], chunk=2, on_chunk=counter.on_chunk)
    counter.detach()
    return counter


def test_linear_layer_with_known_binary_input():
    pattern = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    first = nn.Linear(5, 5)
    with torch.no_grad():
        first.weight.copy_(torch.eye(5))
        first.bias.zero_()
    model = nn.Sequential(first, nn.ReLU(), nn.Linear(5, 3, bias=False))
    counter = _count(model, pattern, T=5)
    assert counter.layers["1"].spikes.tolist() == [3.0] * 5  # the pattern, every step
    assert counter.layers["2"].synaptic_acs.tolist() == [3.0 * 3] * 5  # 3 spikes x fan-out 3
    assert float(counter.layers["0"].macs.sum()) == 25  # analog first layer: 5x5 MACs once
    assert counter.layers["1"].neuron_updates.tolist() == [5.0] * 5


def test_conv_fan_out_counts_padding_and_borders():
    pattern = torch.zeros(1, 1, 5, 5)
    pattern[0, 0, 0, 0] = 1  # corner: covered by 4 output windows
    pattern[0, 0, 0, 2] = 1  # edge: 6
    pattern[0, 0, 2, 2] = 1  # interior: 9
    model = nn.Sequential(_identity_conv(1), nn.ReLU(), nn.Conv2d(1, 2, 3, padding=1))
    counter = _count(model, pattern, T=4)
    assert counter.layers["2"].synaptic_acs.tolist() == [2.0 * (4 + 6 + 9)] * 4
    assert counter.layers["2"].bias_acs.tolist() == [2.0 * 25] * 4  # a bias per output per step


def test_strided_conv_fan_out():
    pattern = torch.ones(1, 1, 4, 4)
    model = nn.Sequential(_identity_conv(1), nn.ReLU(), nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False))
    counter = _count(model, pattern, T=1)
    # every output (2x2) sums a 3x3 window clipped by padding: 4 + 6 + 6 + 9 = 25 synapses
    assert counter.layers["2"].synaptic_acs.tolist() == [25.0]


def test_depthwise_conv_fan_out():
    pattern = torch.zeros(1, 2, 3, 3)
    pattern[0, 0, 1, 1] = 1  # interior of channel 0: 9 windows x multiplier 2
    pattern[0, 1, 0, 0] = 1  # corner of channel 1: 4 windows x 2
    model = nn.Sequential(_identity_conv(2), nn.ReLU(), nn.Conv2d(2, 4, 3, padding=1, groups=2, bias=False))
    counter = _count(model, pattern, T=3)
    assert counter.layers["2"].synaptic_acs.tolist() == [2.0 * 9 + 2.0 * 4] * 3


def test_two_spike_inputs_after_average_pooling_count_spike_values():
    pattern = torch.zeros(1, 1, 2, 4)
    pattern[0, 0, 0, 0] = pattern[0, 0, 1, 1] = 1  # two spikes in the first 2x2 window
    pattern[0, 0, 0, 3] = 1  # one in the second
    model = nn.Sequential(_identity_conv(1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2, 3, bias=False))
    counter = _count(model, pattern, T=2)
    assert counter.layers["4"].synaptic_acs.tolist() == [3.0 * 3] * 2  # 3 spikes x 3 outputs, not 2 non-zeros


def test_counts_match_spikingjelly_synop_counter():
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10),
    ).eval()
    x = torch.rand(16, 1, 8, 8)
    snn, _ = ann_to_snn(model, [x], input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode("max")))
    T = 6
    counter = SnnCounter(snn, "direct", T)
    counter.attach(16)
    simulate(snn, x, [T], chunk=4, on_chunk=counter.on_chunk)
    counter.detach()
    ours = sum(float(layer.synaptic_acs.sum()) for layer in counter.layers.values())
    reference = SynOpCounter()
    runner = snn.runner("direct")
    for module in snn.temporal_modules("direct"):
        module.reset_state()
        module.steps = 1
    with DispatchCounterMode([reference]):
        for _ in range(T):
            runner(x)
    assert ours == reference.get_total() and ours > 1000


def test_per_step_counts_are_additive_and_prefixes_monotone(digits):
    (xtr, _), (xte, yte) = digits
    from annsnn.model_files import load_model
    from annsnn.zoo import embedded_checkpoint

    model = load_model(embedded_checkpoint()).module
    snn, _ = ann_to_snn(model, [xtr[:256]], input_shape=(1, 8, 8), normalization=([0.3054], [0.3761]), options=ConversionOptions.plain())
    with Analyzer(snn, [3, 7, 12]) as a:
        a.run(xte[:32], yte[:32])
        a.run(xte[32:64], yte[32:64])
    result = a.report()
    acs = [row.synaptic_acs for row in result.rows]
    assert acs == sorted(acs) and acs[0] > 0
    per_step_total = sum(float(layer.synaptic_acs.sum()) for layer in a.counter.layers.values()) / a.samples
    assert per_step_total == pytest.approx(result.rows[-1].synaptic_acs, rel=1e-12)
    # direct input: the first layer's MACs do not grow with T
    assert result.rows[0].macs == result.rows[-1].macs > 0
    assert result.rows[-1].neuron_updates == pytest.approx(12 * snn.meta["report"]["neurons"])


def _numpy_real_macs(layer: nn.Conv2d, shape) -> int:
    """Multiplications whose input is a real (unpadded) pixel, by an explicit loop."""
    c, h, w = shape
    kh, kw = layer.kernel_size
    sh, sw = layer.stride
    ph, pw = layer.padding
    dh, dw = layer.dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    taps = 0
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    y, x = i * sh - ph + a * dh, j * sw - pw + b * dw
                    taps += int(0 <= y < h and 0 <= x < w)
    return layer.out_channels * (layer.in_channels // layer.groups) * taps


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.Conv2d(3, 8, 3, padding=1), (3, 16, 16)),
        (nn.Conv2d(8, 8, 3, stride=2, groups=8), (8, 15, 15)),
        (nn.Conv2d(8, 16, (3, 5), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=4), (8, 9, 11)),
        (nn.Conv2d(2, 4, 5, stride=3, padding=2), (2, 7, 6)),
    ],
)
def test_ann_conv_macs_exclude_padding_like_a_numpy_loop(layer, shape):
    """Item 13: one convention for ANN and SNN: real work, padded positions excluded."""
    counts = count_ann(nn.Sequential(layer), shape)
    out = layer(torch.zeros(1, *shape)).shape
    expected = _numpy_real_macs(layer, shape)
    assert counts.macs == expected == dense_macs(layer, shape)
    # fvcore's own count stays visible, labelled: every output times the whole kernel
    assert counts.macs_with_padding == math.prod(out[1:]) * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)


def test_linear_macs_closed_form():
    layer = nn.Linear(20, 7)
    counts = count_ann(nn.Sequential(layer), (20,))
    assert counts.macs == counts.macs_with_padding == 140 == dense_macs(layer, (20,))


def test_functional_ops_in_forward_are_counted_and_unsupported_ops_reported():
    """Item 25: an F.linear in forward() was dropped (576 counted where fvcore gives 1,216)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 36)
            self.w = nn.Parameter(torch.randn(40, 16))

        def forward(self, x):
            return torch.cummax(self.fc(x)[:, :16] + F.linear(x, self.w)[:, :16], dim=1).values

    import torch.nn.functional as F

    counts = count_ann(Net(), (16,))
    assert counts.macs == 16 * 36 + 16 * 40 == 1216
    rows = {layer.name: layer.macs for layer in counts.layers}
    assert rows == {"fc": 576, "(model)": 640}
    assert counts.unsupported == {"aten::add": 1, "aten::cummax": 1}


def test_onnx_model_is_counted_whatever_its_module_names(tmp_path):
    """Item 18: onnx2torch names modules like '0/Conv'; fvcore raised KeyError on them.
    (annsnn's own ONNX importer sanitizes names, so the module comes from onnx2torch here.)"""
    from onnx2torch import convert as onnx2torch_convert

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)).eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=17)
    loaded = onnx2torch_convert(str(path)).eval()
    assert any("/" in name for name, _ in loaded.named_modules())
    expected = 4 * 1 * 22 * 22 + 64 * 10  # conv: 22x22 real taps over the 8x8 outputs
    assert count_ann(loaded, (1, 8, 8)).macs == expected
    x = torch.rand(8, 1, 8, 8)
    snn, _ = ann_to_snn(loaded, [x], input_shape=(1, 8, 8), options=ConversionOptions.plain())
    with Analyzer(snn, [2]) as a:
        a.run(x)
    assert a.report().ann.macs == expected


def test_poisson_input_drives_the_first_layer_with_acs():
    """Item 11: {0,1} input spikes cost ACs = sum over steps of input spikes x fan-out."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.rand(5, 6)
    snn, _ = ann_to_snn(model, [x], input_shape=(6,), options=ConversionOptions.plain())
    T = 7
    counter = SnnCounter(snn, "poisson", T)
    seen = []
    encoder = next(m for m in snn.graph.modules() if type(m).__name__ == "InputEncoder")
    handle = encoder.register_forward_hook(lambda mod, a, out: seen.append(out.detach().clone()))
    counter.attach(5)
    simulate(snn, x, [T], encoding="poisson", generator=torch.Generator().manual_seed(3), chunk=3, on_chunk=counter.on_chunk)
    counter.detach()
    handle.remove()
    spikes = torch.cat([s.reshape(-1, 5, 6) for s in seen])  # [T, B, 6]
    assert spikes.shape[0] == T and set(spikes.unique().tolist()) <= {0.0, 1.0}
    layer = counter.layers["0"]  # Linear(6, 4), fed by the encoder
    assert layer.role == "synaptic" and float(layer.macs.sum()) == 0
    assert layer.synaptic_acs.tolist() == (spikes.sum((1, 2)) * 4).tolist()  # fan-out 4
    assert layer.bias_acs.tolist() == [5.0 * 4] * T  # one bias AC per output per step


def test_active_neuron_updates_are_those_with_input_or_a_spike():
    """Item 9: a neuron update is active when its input current is non-zero or it spikes."""
    pattern = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    first = nn.Linear(5, 5)
    with torch.no_grad():
        first.weight.copy_(torch.eye(5))
        first.bias.zero_()
    counter = _count(nn.Sequential(first, nn.ReLU(), nn.Linear(5, 3, bias=False)), pattern, T=5)
    assert counter.layers["1"].neuron_updates.tolist() == [5.0] * 5
    assert counter.layers["1"].active_updates.tolist() == [3.0] * 5


def _numpy_windows(h: int, w: int, k: int, stride: int, pad: int) -> "list[list[int]]":
    out_h, out_w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    count = [[0] * w for _ in range(h)]
    for i in range(out_h):
        for j in range(out_w):
            for a in range(k):
                for b in range(k):
                    y, x = i * stride - pad + a, j * stride - pad + b
                    if 0 <= y < h and 0 <= x < w:
                        count[y][x] += 1
    return count


def test_spiking_max_pool_comparisons_are_charged_per_input_spike_and_window():
    """Item 14: each input spike is compared once in every window that holds it."""
    pattern = torch.zeros(1, 1, 5, 5)
    spots = [(0, 0), (1, 2), (2, 2), (4, 3)]
    for y, x in spots:
        pattern[0, 0, y, x] = 1
    model = nn.Sequential(_identity_conv(1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(), nn.Linear(9, 2, bias=False))
    counter = _count(model, pattern, T=3)
    windows = _numpy_windows(5, 5, 3, 2, 1)
    expected = sum(windows[y][x] for y, x in spots)
    assert counter.layers["2"].comparisons.tolist() == [float(expected)] * 3
    assert sum(float(layer.synaptic_acs.sum()) for layer in counter.layers.values() if layer.name != "4") == 0


def test_batchnorm_and_pooling_are_kept_out_of_macs():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    counts = count_ann(model, (3, 6, 6))
    assert counts.macs == 4 * 4 * 4 * 27 + 8
    assert counts.other_ops().get("batch_norm", 0) > 0 and "adaptive_avg_pool2d" in counts.other_ops()


@pytest.mark.slow
def test_torchvision_vgg19_and_mobilenet_v2_macs():
    import torchvision

    vgg = count_ann(torchvision.models.vgg19(), (3, 224, 224))
    assert vgg.macs_with_padding / 1e9 == pytest.approx(19.63, rel=0.005)  # the published figure counts padding
    mobile = count_ann(torchvision.models.mobilenet_v2(), (3, 224, 224))
    conv = sum(l.macs_with_padding for l in mobile.layers if l.type == "Conv2d")
    linear = sum(l.macs for l in mobile.layers if l.type == "Linear")
    assert mobile.macs_with_padding / 1e9 == pytest.approx(0.3008, rel=0.005)
    assert conv / 1e9 == pytest.approx(0.2995, rel=0.005) and linear / 1e9 == pytest.approx(0.0013, rel=0.05)
    assert vgg.macs < vgg.macs_with_padding and mobile.macs < mobile.macs_with_padding


def test_unsupported_layer_is_reported_not_counted_as_zero():
    import dataclasses

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 2)).eval()
    x = torch.rand(4, 1, 4, 4)
    snn, _ = ann_to_snn(model, [x], input_shape=(1, 4, 4), options=ConversionOptions.plain())
    registry = snn.registry.copy()  # the same entries, AvgPool2d without its counting rule
    registry.register(dataclasses.replace(registry["AvgPool2d"], fanout=None), replace=True)
    counter = SnnCounter(snn, "direct", 3, registry=registry)
    assert any("AvgPool2d" in item for item in counter.unsupported)


def test_spiking_max_pool_of_non_binary_spikes_is_refused():
    """Item 14: max-pool of a sum of two spike trains (one rescaled) gets graded values; a
    spiking pool there would pass them on as if they were spikes. Conversion refuses it."""
    import torch.nn.functional as F

    from annsnn.errors import UsageError

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1)
            self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(32, 3)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(F.relu(self.c1(x)) + F.relu(self.c2(x))), 1))

    torch.manual_seed(0)
    x = torch.rand(8, 1, 8, 8)
    with pytest.raises(UsageError, match="max-pool of non-binary spike input"):
        ann_to_snn(Net().eval(), [x], input_shape=(1, 8, 8), options=ConversionOptions.plain())



@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 9), st.integers(1, 9), st.integers(1, 4), st.integers(1, 3), st.integers(0, 3), st.integers(1, 2),
)
def test_padding_excluded_macs_match_the_loop_for_any_conv(h, w, k, stride, pad, dilation):
    assume(h + 2 * pad >= dilation * (k - 1) + 1 and w + 2 * pad >= dilation * (k - 1) + 1)
    layer = nn.Conv2d(2, 3, k, stride=stride, padding=pad, dilation=dilation)
    assert dense_macs(layer, (2, h, w)) == _numpy_real_macs(layer, (2, h, w))


def test_uneven_adaptive_average_pool_fan_out_counts_every_window():
    """AdaptiveAvgPool2d(5 -> 3) has overlapping windows [floor(i*5/3), ceil((i+1)*5/3)):
    rows {0,1}, {1,2,3}, {3,4}, so row/column 0..4 lies in 1, 2, 1, 2, 1 windows."""
    windows = [1, 2, 1, 2, 1]
    pattern = torch.zeros(1, 1, 5, 5)
    spikes = [(1, 3), (0, 2), (4, 1), (3, 3)]
    for h, w in spikes:
        pattern[0, 0, h, w] = 1
    model = nn.Sequential(_identity_conv(1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(9, 4, bias=False))
    counter = _count(model, pattern, T=3)
    fan_in = sum(windows[h] * windows[w] for h, w in spikes)  # 4 + 1 + 2 + 4
    assert counter.layers["4"].synaptic_acs.tolist() == [4.0 * fan_in] * 3


def test_adaptive_average_pool_up_from_one_pixel_counts_each_copy():
    """AlexNet at 64x64: 1x1 -> 6x6, every output window holds the one input pixel."""
    pattern = torch.ones(1, 2, 1, 1)
    model = nn.Sequential(_identity_conv(2), nn.ReLU(), nn.AdaptiveAvgPool2d(6), nn.Flatten(), nn.Linear(72, 3, bias=False))
    counter = _count(model, pattern, T=2)
    assert counter.layers["4"].synaptic_acs.tolist() == [2 * 36 * 3.0] * 2


def test_analyzer_refuses_an_output_that_is_not_batch_by_classes(digits):
    """argmax(1) of an [N, 10, 1] output, compared with [N] labels, broadcast to N x N: an
    accuracy of 400 % was printed for a model whose output kept a trailing axis."""
    (xtr, _), (xte, yte) = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 10, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(2)).eval()
    snn, _ = ann_to_snn(model, [xtr[:64]], input_shape=(1, 8, 8), options=ConversionOptions.plain())
    with Analyzer(snn, [4]) as a, pytest.raises(UsageError, match=r"shape \[8, 10, 1\]"):
        a.run(xte[:8], yte[:8])


def test_analyzer_refuses_labels_beyond_the_models_outputs(digits):
    """A 10-class test set scored by a 3-output model: refused, not scored as if it matched."""
    (xtr, _), (xte, yte) = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    snn, _ = ann_to_snn(model, [xtr[:64]], input_shape=(1, 8, 8), options=ConversionOptions.plain())
    labels = torch.arange(8) % 10
    with Analyzer(snn, [4]) as a, pytest.raises(UsageError, match="labels run from 0 to 7, but the model has 3 outputs"):
        a.run(xte[:8], labels)


def _same_taps(length: int, k: int, d: int) -> int:
    """Taps on real inputs of a 1-d 'same' convolution (stride 1), by loop: torch pads
    d (k - 1) in all, the smaller half on the left."""
    left = d * (k - 1) // 2
    return sum(1 for o in range(length) for j in range(k) if 0 <= o - left + j * d < length)


@pytest.mark.parametrize("kernel,dilation", [((3, 3), (1, 1)), ((4, 2), (1, 1)), ((3, 4), (2, 1))])
def test_a_same_padded_conv_is_counted_by_the_ann_and_the_snn_counters(kernel, dilation, digits):
    """padding='same' traces as aten::_convolution_mode, which fvcore has no handle for: the
    ANN count left the conv out (0 MACs, 5x too little energy) and the SNN counter refused it."""
    (xtr, _), (xte, _) = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, kernel, padding="same", dilation=dilation), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 64, 3)).eval()
    conv2 = 6 * 4 * _same_taps(8, kernel[0], dilation[0]) * _same_taps(8, kernel[1], dilation[1])
    conv0 = 4 * 1 * _same_taps(8, 3, 1) ** 2
    counts = count_ann(model, (1, 8, 8))
    assert counts.unsupported == {}
    assert {row.name: row.macs for row in counts.layers if row.macs} == {"0": conv0, "2": conv2, "5": 6 * 64 * 3}
    assert dense_macs(model[2], (4, 8, 8)) == conv2
    snn, _ = ann_to_snn(model, [xtr[:64]], input_shape=(1, 8, 8), options=ConversionOptions.plain())
    with Analyzer(snn, [2]) as a:  # refused before ("give explicit padding")
        a.run(xte[:4])
    assert a.report().rows[0].macs == conv0  # direct input: the first layer's MACs, once


def test_a_module_applied_twice_adds_its_bias_twice():
    """fvcore counts a shared module's MACs at every call; its bias adds were counted once
    (from the last call's output shape). Conv(4, 4, 3, padding=1) twice on 4x8x8: 256 bias
    adds per call; the Linear(256, 3): 3."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(256, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(torch.relu(self.conv(x)))).flatten(1))

    counts = count_ann(Twice().eval(), (4, 8, 8))
    rows = {row.name: row for row in counts.layers}
    taps = _same_taps(8, 3, 1) ** 2
    assert rows["conv"].macs == 2 * 4 * 4 * taps
    assert (rows["conv"].bias_adds, rows["fc"].bias_adds) == (2 * 256, 3)
