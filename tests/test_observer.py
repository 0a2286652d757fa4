import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from annsnn.modes import ScaleMode
from annsnn.observer import ActivationObserver


def test_forward_is_identity_and_max_is_exact():
    obs = ActivationObserver()
    x = torch.rand(4, 3, 5, 5) * 7.3
    assert obs(x) is x
    obs(torch.rand(2, 3, 5, 5))
    assert float(obs.max_val) == pytest.approx(float(x.max()), abs=0)
    assert torch.allclose(obs.channel_max.float(), x.transpose(0, 1).reshape(3, -1).amax(1))


def test_percentile_of_arange_within_one_bin():
    obs = ActivationObserver(bins=2048)
    values = torch.arange(1, 100_001, dtype=torch.float32)
    for chunk in values.split(7_777):  # many batches, growing range
        obs(chunk.view(-1, 1))
    for q in (50.0, 99.0, 99.9, 99.99):
        expected = float(np.percentile(values.numpy(), q))
        assert abs(obs.percentile(q) - expected) <= obs.bin_width
    assert obs.bin_width <= 2 * float(obs.max_val) / 2048


def test_zeros_count_in_percentiles_by_default_and_can_be_left_out():
    obs = ActivationObserver()
    obs(torch.cat([torch.zeros(9000), torch.linspace(0.001, 1, 1000)]).view(-1, 1))
    assert float(obs.zeros) == 9000
    # all 10,000 values: the 95th percentile is the 500th positive value, 0.5
    assert obs.percentile(95) == pytest.approx(0.5, abs=2 * obs.bin_width)
    assert obs.percentile(90) == 0.0 and obs.percentile(50) == 0.0
    # positives only: their median is 0.5
    assert obs.percentile(50, of="positive") == pytest.approx(0.5, abs=2 * obs.bin_width)
    assert float(obs.scale(ScaleMode("percentile", 95))) == obs.percentile(95)
    assert float(obs.scale(ScaleMode("percentile", 50), percentile_of="positive")) == obs.percentile(50, of="positive")
    assert obs.fraction_above(0.5) == pytest.approx(0.05, abs=0.002)
    with pytest.raises(ValueError):
        obs.percentile(50, of="nonzero")  # type: ignore[arg-type]


def test_channel_percentile_of_all_counts_each_channels_zeros():
    obs = ActivationObserver(channel_wise=True)
    ones = torch.arange(1, 101).float()
    x = torch.stack([ones, torch.cat([torch.zeros(90), ones[:10]])], dim=1)  # channel 1: 90% zeros
    obs(x)
    assert abs(obs.percentile(95, channel=0) - float(np.percentile(ones.numpy(), 95, method="inverted_cdf"))) <= obs.bin_width
    assert abs(obs.percentile(95, channel=1) - 5.0) <= obs.bin_width  # the 5th of 1..10
    assert obs.percentile(85, channel=1) == 0.0


def test_fraction_scale_and_max_scale():
    obs = ActivationObserver()
    obs(torch.tensor([[0.0], [3.0], [6.0]]))
    assert float(obs.scale(ScaleMode("max"))) == 6.0
    assert float(obs.scale(ScaleMode("fraction", 1 / 3))) == pytest.approx(2.0)


def test_state_dict_round_trip():
    obs = ActivationObserver(channel_wise=True)
    obs(torch.rand(8, 4, 3, 3) * 5)
    fresh = ActivationObserver(channel_wise=True)
    fresh.load_state_dict(obs.state_dict())
    for q in (50.0, 99.0):
        assert fresh.percentile(q) == obs.percentile(q)
        assert fresh.percentile(q, channel=2) == obs.percentile(q, channel=2)
    assert torch.equal(fresh.channel_max, obs.channel_max)


def test_empty_tensor_is_harmless():
    obs = ActivationObserver()
    out = obs(torch.empty(0, 3))
    assert out.numel() == 0 and float(obs.total) == 0 and obs.percentile(99) == 0.0


def test_batch_order_does_not_matter():
    data = torch.rand(10, 64, 1) ** 3 * torch.linspace(0.1, 9, 10).view(10, 1, 1)
    a, b = ActivationObserver(), ActivationObserver()
    for batch in data:
        a(batch)
    for batch in data.flip(0):
        b(batch)
    # identical max; percentiles agree within a bin (ranges may differ by the doubling path)
    assert float(a.max_val) == float(b.max_val)
    assert abs(a.percentile(99.0) - b.percentile(99.0)) <= max(a.bin_width, b.bin_width)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=5, max_size=400), st.floats(1, 100))
def test_percentile_matches_numpy_within_a_bin(values, q):
    obs = ActivationObserver(bins=512)
    tensor = torch.tensor(values, dtype=torch.float64).view(-1, 1).float()
    obs(tensor)
    everything = tensor.double().numpy().ravel()
    positives = everything[everything > 0]
    if positives.size == 0:
        assert obs.percentile(q) == 0.0 == obs.percentile(q, of="positive")
        return
    # nearest-rank percentiles (the histogram's definition), of all values and of the positives
    lower_all = float(np.percentile(everything, q, method="inverted_cdf"))
    lower_pos = float(np.percentile(positives, q, method="inverted_cdf"))
    assert abs(obs.percentile(q) - lower_all) <= obs.bin_width + 1e-6 * lower_all
    assert abs(obs.percentile(q, of="positive") - lower_pos) <= obs.bin_width + 1e-6 * lower_pos
    assert obs.percentile(q) <= obs.percentile(q, of="positive")


def test_channel_wise_percentiles():
    obs = ActivationObserver(channel_wise=True)
    x = torch.stack([torch.arange(1, 1001).float(), 10 * torch.arange(1, 1001).float()], dim=1)  # [N, 2]
    obs(x)
    assert abs(obs.percentile(50, channel=0) - 500) <= obs.bin_width
    assert abs(obs.percentile(50, channel=1) - 5000) <= obs.bin_width
    scales = obs.scale(ScaleMode("max"), channel_wise=True)
    assert scales.tolist() == [1000.0, 10000.0]


def _nearest_rank_bounds(values: np.ndarray, q: float) -> tuple[float, float]:
    """The order statistics bracketing the nearest-rank q-th percentile (float rounding of q*n/100)."""
    ordered = np.sort(values)
    rank = q / 100.0 * len(ordered)
    lo = max(int(np.floor(rank - 1e-9)), 1)
    hi = min(max(int(np.ceil(rank + 1e-9)), 1), len(ordered))
    return float(ordered[lo - 1]), float(ordered[hi - 1])


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(0, 1, allow_nan=False), min_size=20, max_size=300),
    st.floats(1e-4, 1e-2),
    st.floats(1, 100),
    st.integers(1, 4),
)
def test_each_channel_percentile_has_its_own_resolution(unit, small, q, batches):
    """Channel 1 is ~1000x smaller than channel 0; each channel's percentile is within ITS OWN
    bin (at most 2 * channel max / bins) of numpy's nearest-rank percentile of that channel."""
    base = torch.tensor(unit, dtype=torch.float32)
    x = torch.stack([base * 10.0, base * small], dim=1)  # [N, 2]
    obs = ActivationObserver(bins=256, channel_wise=True)
    for chunk in x.chunk(batches):
        obs(chunk)
    for c in range(2):
        column = x[:, c].double().numpy()
        top = float(column.max())
        for of, population in (("all", column), ("positive", column[column > 0])):
            got = obs.percentile(q, channel=c, of=of)
            if population.size == 0:
                assert got == 0.0
                continue
            lo, hi = _nearest_rank_bounds(population, q)
            width = 2 * top / 256
            assert lo - width - 1e-12 <= got <= hi + width + 1e-12, (c, of, got, lo, hi, width)


def test_small_channel_percentile_is_not_quantized_to_the_layer():
    ramp = torch.linspace(0, 1, 1001, dtype=torch.float64)
    x = torch.stack([ramp, ramp**4 * 1e-3], dim=1).float()  # channel 1: skewed, 1000x smaller
    obs = ActivationObserver(bins=2048, channel_wise=True)
    obs(x)
    resolution = 2 * 1e-3 / 2048
    assert abs(obs.percentile(50, channel=1) - 0.5**4 * 1e-3) <= resolution
    assert abs(float(obs.scale(ScaleMode("percentile", 90), channel_wise=True)[1]) - 0.9**4 * 1e-3) <= resolution


def test_histograms_are_identical_whatever_the_batch_order():
    data = torch.rand(10, 64, 3) ** 3 * torch.linspace(0.1, 9, 10).view(10, 1, 1) * torch.tensor([1.0, 1e-3, 5.0])
    a, b = ActivationObserver(channel_wise=True), ActivationObserver(channel_wise=True)
    for batch in data:
        a(batch)
    for batch in data.flip(0):
        b(batch)
    for name, buffer in a.state_dict().items():
        assert torch.equal(buffer, b.state_dict()[name]), name


def _numpy_histograms(batches: list[np.ndarray], bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The observer's histograms from first principles, in float64 numpy: each range is the
    smallest power of two strictly above the running max (layer, and per channel), and a
    positive value x lands in bin floor(x * bins / range). Since bins only ever merge in
    pairs as a range doubles, binning every value at the FINAL range gives the same counts."""
    per_channel = np.concatenate([b.reshape(b.shape[0], b.shape[1], -1).transpose(1, 0, 2).reshape(b.shape[1], -1) for b in batches], axis=1).astype(np.float64)
    def histogram(values: np.ndarray) -> np.ndarray:
        positive = values[values > 0]
        if positive.size == 0:
            return np.zeros(bins)
        top = 2.0 ** (np.floor(np.log2(positive.max())) + 1)  # smallest power of two strictly above the max
        return np.bincount(np.minimum(np.floor(positive / (top / bins)), bins - 1).astype(np.int64), minlength=bins).astype(np.float64)
    return histogram(per_channel.ravel()), np.stack([histogram(row) for row in per_channel])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 4),  # batches
    st.integers(1, 3),  # images per batch
    st.integers(1, 5),  # channels
    st.integers(1, 40),  # values per channel and image
    st.lists(st.floats(-60, 60), min_size=5, max_size=5),  # log2 scale of each channel
    st.integers(0, 2**31 - 1),
    st.sampled_from([torch.float32, torch.float64, torch.float16]),
)
def test_histograms_equal_a_numpy_reference_bin_for_bin(batches, images, channels, size, exponents, seed, dtype):
    """Layer and per-channel histograms equal an independent float64 numpy binning exactly,
    for channels from 2**-60 to 2**60 (float32 binning must be exact), with zeros and negatives."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.tensor([2.0 ** e for e in exponents[:channels]], dtype=torch.float64).view(1, channels, 1)
    if dtype == torch.float16:
        scales = scales.clamp(2.0**-10, 2.0**10)  # what float16 can hold
    data = []
    for _ in range(batches):
        batch = ((torch.rand(images, channels, size, generator=generator, dtype=torch.float64) * 2 - 0.5) * scales).to(dtype)
        # bin edges of the range 2 * scale (the max lies in [scale, 2 scale)) and the values
        # just below them: a binning off by one ulp puts these in the neighbouring bin
        edges = (torch.randint(1, 64, batch.shape, generator=generator).double() * scales / 32).to(dtype)
        below = torch.nextafter(edges, torch.zeros_like(edges))
        pick = torch.randint(0, 4, batch.shape, generator=generator)
        batch = torch.where(pick == 1, edges, torch.where(pick == 2, below, batch))
        batch[0, :, 0] = (scales.view(-1) * 1.5).to(dtype)
        data.append(batch)
    obs = ActivationObserver(bins=64, channel_wise=True)
    for batch in data:
        obs(batch)
    layer, per_channel = _numpy_histograms([b.double().numpy() for b in data], 64)
    assert np.array_equal(obs.histogram.numpy(), layer)
    assert np.array_equal(obs.channel_histogram.double().numpy(), per_channel)
    plain = ActivationObserver(bins=64)
    for batch in data:
        plain(batch)
    assert np.array_equal(plain.histogram.numpy(), layer)


def test_channel_counts_widen_before_they_could_overflow(monkeypatch):
    """Per-channel counts are kept as int32 (half the memory of float64) and become int64 once
    a channel has seen more values than int32 holds; the counts stay exact across the switch."""
    import annsnn.observer as observer_module

    monkeypatch.setattr(observer_module, "_INT32_MAX", 100)
    obs = ActivationObserver(bins=8, channel_wise=True)
    batch = torch.full((60, 2), 0.3)
    obs(batch)
    assert obs.channel_histogram.dtype == torch.int32
    obs(batch)  # 120 values per channel > 100
    assert obs.channel_histogram.dtype == torch.int64
    assert obs.channel_histogram.sum(1).tolist() == [120, 120]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31 - 1), st.lists(st.floats(-1, 3), min_size=6, max_size=6))
def test_all_channels_fractions_above_equal_the_scalar_call_exactly(channels, seed, relative):
    """The vectorised clipped fractions (one call for every channel) equal fraction_above
    channel by channel, to the last bit: thresholds below zero, on bin edges, inside bins,
    at the channel max and above it."""
    generator = torch.Generator().manual_seed(seed)
    scale = torch.tensor([4.0**c for c in range(channels)]).view(1, channels, 1) * 1e-3
    x = torch.relu(torch.randn(5, channels, 50, generator=generator)) * scale
    obs = ActivationObserver(bins=32, channel_wise=True)
    obs(x)
    tops = obs.channel_max.float()
    thresholds = torch.tensor(relative[:channels], dtype=torch.float32) * tops
    thresholds[0] = tops[0]  # exactly the max: nothing above
    if channels > 1:
        thresholds[1] = float(obs.channel_range[1]) / 32 * 3  # a bin edge
    vectorised = obs.channel_fractions_above(thresholds).tolist()
    assert vectorised == [obs.fraction_above(t, channel=c) for c, t in enumerate(thresholds.tolist())]
