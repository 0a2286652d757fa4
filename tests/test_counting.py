"""Counts against hand-computed values, fvcore against closed forms, and spikingjelly's counter."""
import math

import pytest
import torch
from torch import nn

from annsnn.analyzer import Analyzer
from annsnn.convert import ConversionOptions
from annsnn.counting import SnnCounter, count_ann, dense_macs
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
    snn, _ = ann_to_snn(model.eval(), [pattern], input_shape=tuple(pattern.shape[1:]), options=ConversionOptions(mode=parse_mode("max")))
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
    snn, _ = ann_to_snn(model, [x], input_shape=(1, 8, 8), options=ConversionOptions(mode=parse_mode("max")))
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
    assert ours > 0 and ours == reference.get_total()


def test_per_step_counts_are_additive_and_prefixes_monotone(digits):
    (xtr, _), (xte, yte) = digits
    from annsnn.io import load_model
    from annsnn.zoo import embedded_checkpoint

    model = load_model(embedded_checkpoint()).module
    snn, _ = ann_to_snn(model, [xtr[:256]], input_shape=(1, 8, 8), normalization=([0.3054], [0.3761]))
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


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.Conv2d(3, 8, 3, padding=1), (3, 16, 16)),
        (nn.Conv2d(8, 8, 3, stride=2, groups=8), (8, 15, 15)),
        (nn.Conv2d(8, 16, (3, 5), stride=(1, 2), groups=4), (8, 9, 11)),
        (nn.Linear(20, 7), (20,)),
    ],
)
def test_fvcore_macs_equal_closed_form(layer, shape):
    counts = count_ann(nn.Sequential(layer), shape)
    out = layer(torch.zeros(1, *shape)).shape
    if isinstance(layer, nn.Linear):
        expected = layer.in_features * layer.out_features
    else:
        expected = math.prod(out[1:]) * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)
    assert counts.macs == expected == dense_macs(layer, tuple(out))


def test_batchnorm_and_pooling_are_kept_out_of_macs():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    counts = count_ann(model, (3, 6, 6))
    assert counts.macs == 4 * 4 * 4 * 27 + 8
    assert counts.other_ops().get("batch_norm", 0) > 0 and "adaptive_avg_pool2d" in counts.other_ops()


@pytest.mark.slow
def test_torchvision_vgg19_and_mobilenet_v2_macs():
    import torchvision

    vgg = count_ann(torchvision.models.vgg19(), (3, 224, 224))
    assert vgg.macs / 1e9 == pytest.approx(19.63, rel=0.005)
    mobile = count_ann(torchvision.models.mobilenet_v2(), (3, 224, 224))
    conv = sum(l.macs for l in mobile.layers if l.type == "Conv2d")
    linear = sum(l.macs for l in mobile.layers if l.type == "Linear")
    assert mobile.macs / 1e9 == pytest.approx(0.3008, rel=0.005)
    assert conv / 1e9 == pytest.approx(0.2995, rel=0.005) and linear / 1e9 == pytest.approx(0.0013, rel=0.05)


def test_unsupported_layer_is_reported_not_counted_as_zero():
    from annsnn.counting import default_structural_handlers

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 2)).eval()
    x = torch.rand(4, 1, 4, 4)
    snn, _ = ann_to_snn(model, [x], input_shape=(1, 4, 4))
    handlers = default_structural_handlers()
    del handlers[nn.AvgPool2d]
    counter = SnnCounter(snn, "direct", 3, handlers=handlers)
    assert any("AvgPool2d" in item for item in counter.unsupported)
