"""Layer-major simulation (annsnn.layerwise) and the step-bias fit that runs on it: the same
dynamics as the step-major simulator, bit for bit, with one layer's state live at a time."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from annsnn.calibration import _MAX_BIAS, _MIN_ACTIVE, _channel_count, _channel_shape, _channel_view, ann_channel_targets, fit_step_bias, quantile_bias
from annsnn.convert import ConversionOptions
from annsnn.layers import IFNeurons, SpikingMaxPool2d
from annsnn.layerwise import PackedSpikes, run_layerwise
from annsnn.modes import parse_mode
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate


class _Residual(nn.Module):
    """Residual adds, an option-A shortcut (slice + F.pad), a depthwise conv, a spiking
    max-pool and ``view(x.size(0), -1)``: every kind of edge the layer-major run must cache."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.c2(F.relu(self.c1(x))))
        y = self.down(x)
        x = F.relu(y + F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4)))
        x = F.max_pool2d(x, 2)
        return self.fc(x.view(x.size(0), -1))


class _LinearBottleneck(nn.Module):
    """MobileNetV2's shape of residual: the stream ``r`` between blocks has no neuron
    (linear bottleneck), so each block's expansion reads ``r_k = r_(k-1) + p_k(...)``, a
    stateless value that the next block's ``r_(k+1)`` reads again. ``stream`` channels at
    4 x 4 (p1 has stride 2): 2 of them (32 floats per image) are as many bytes per step as
    the stem's 16 x 8 x 8 spikes in bits; 4 are twice as many."""

    def __init__(self, stream: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.p1 = nn.Conv2d(16, stream, 1, stride=2)
        self.expand = nn.ModuleList(nn.Conv2d(stream, 8, 1) for _ in range(3))
        self.project = nn.ModuleList(nn.Conv2d(8, stream, 1) for _ in range(3))
        self.head = nn.Conv2d(stream, 8, 1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        r = self.p1(F.relu(self.stem(x)))
        for e, p in zip(self.expand, self.project):
            r = r + p(F.relu(e(r)))
        return self.fc(F.relu(self.head(r)).flatten(1))


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def images():
    from annsnn.data import load_dataset

    (x, _) = load_dataset("digits", "train").tensors  # type: ignore[attr-defined]
    return x[:160]


def _snn(builder, images, T):
    torch.manual_seed(0)
    model = builder().eval()
    options = ConversionOptions.plain(mode=parse_mode("99.99"), channel_wise=True, v_init=0.5, T=T, threshold="if-search", bias="none", readout_delay=0)
    return ann_to_snn(model, [images], input_shape=tuple(images.shape[1:]), options=options)[0]


def _record(snn, run) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Each temporal layer's (input, output) at every call, in call order."""
    seen: dict[str, list] = {}
    handles = [m.register_forward_hook(lambda mod, args, out, _n=name: seen.setdefault(_n, []).append((args[0].clone(), out.clone())))
               for name, m in snn.graph.named_modules() if isinstance(m, (IFNeurons, SpikingMaxPool2d))]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("builder", [_Residual, _mlp, _LinearBottleneck])
@pytest.mark.parametrize("batch", [4, 64])
def test_layerwise_run_gives_every_layer_the_inputs_and_outputs_of_a_step_major_run(images, builder, batch):
    """Against simulate(chunk=1), the step-major reference: every IF layer and spiking
    max-pool sees the same input and gives the same output at every step, bit for bit,
    also when the image batch (10) is split unevenly (4 + 4 + 2). The stateless ops run on
    4 images at a time there, so the reference simulates each span of 4 on its own: a
    matmul may round differently for another batch size (it does for the MLP's Linear on one
    thread), while the neurons' arithmetic is elementwise."""
    T, x = 5, images[:10]
    snn = _snn(builder, images, T)
    spans = [(lo, min(lo + batch, 10)) for lo in range(0, 10, batch)]
    parts = [_record(snn, lambda lo=lo, hi=hi: simulate(snn, x[lo:hi], T, chunk=1)) for lo, hi in spans]
    reference = {name: [(torch.cat([p[name][t][0] for p in parts]), torch.cat([p[name][t][1] for p in parts])) for t in range(T)] for name in parts[0]}
    layerwise = _record(snn, lambda: run_layerwise(snn, x, T, batch=batch))
    assert set(reference) == set(layerwise) and len(reference) == {_Residual: 5, _mlp: 2, _LinearBottleneck: 5}[builder]
    if builder is _Residual:
        assert any(isinstance(m, SpikingMaxPool2d) for m in snn.graph.modules())
    for name in reference:
        assert len(layerwise[name]) == T
        for (xi, yi), (xj, yj) in zip(reference[name], layerwise[name]):
            assert torch.equal(xi, xj) and torch.equal(yi, yj), name
        assert any(bool(y.any()) for _, y in reference[name]), f"{name} never spikes: the check would be vacuous"


def test_layerwise_run_keeps_one_layer_state_at_a_time(images):
    """The step-major run holds every layer's potentials at once; the layer-major run holds
    the current layer's only (the memory bound the step-bias fit relies on)."""
    snn = _snn(_Residual, images, 4)
    neurons = list(snn.neuron_layers().values())
    live: list[int] = []
    handles = [m.register_forward_pre_hook(lambda mod, args: live.append(sum(n.v is not None for n in neurons))) for m in neurons]
    try:
        run_layerwise(snn, images[:8], 4)
        layerwise = max(live)
        live.clear()
        simulate(snn, images[:8], 4, chunk=1)
        stepwise = max(live)
    finally:
        for h in handles:
            h.remove()
    assert layerwise == 1
    assert stepwise == len(neurons) >= 4


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 7), st.integers(1, 21), st.integers(0, 2**31 - 1), st.data())
def test_packed_spikes_round_trip_any_shape_and_span(steps, batch, neurons, seed, data):
    """Bits per image, padded to a byte: a slice of images at any step comes back exactly,
    whatever the number of neurons per image (numpy reference: the same 0/1 array)."""
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 2, size=(steps, batch, neurons)).astype(np.float32)
    packed = PackedSpikes.empty(steps, (batch, neurons), torch.float32)
    for t in range(steps):
        packed.store(t, torch.from_numpy(train[t]) if t % 2 else torch.from_numpy(train[t]).bool())
    assert packed.bits.numel() == steps * batch * -(-neurons // 8)
    t = data.draw(st.integers(0, steps - 1))
    lo = data.draw(st.integers(0, batch - 1))
    hi = data.draw(st.integers(lo + 1, batch))
    back = packed.load(t, lo, hi)
    assert back.dtype == torch.float32
    assert np.array_equal(back.numpy(), train[t, lo:hi])


def _reference_step_fit(snn, images, steps, solver):
    """The step-bias fit as first written: step-major (simulate, chunk 1, every layer at
    each step), with the bias set in a forward pre-hook. An independent reference."""
    targets = ann_channel_targets(snn, images)
    neurons = snn.neuron_layers()
    counts: dict = {}
    handles = []
    for name, module in neurons.items():
        module.set_step_bias(torch.zeros((steps,) + _channel_shape(targets[name][2]), dtype=torch.float32))

        def pre(mod, args, _name=name):
            x, t = args[0], mod.t
            v = mod.v if mod.v is not None else torch.full(x.shape, mod.v_init, dtype=torch.float32)
            target, active, _ = targets[_name]
            fired = _channel_count((v + x) >= 1.0) / (x.numel() / x.shape[1])
            want = (target * (t + 1) - counts.get(_name, torch.zeros_like(target))).clamp(0.0, 1.0)
            if solver == "quantile":
                b = quantile_bias(_channel_view(v + x), want).clamp(-_MAX_BIAS, _MAX_BIAS)
            else:
                b = ((want - fired) / active.clamp(min=_MIN_ACTIVE)).clamp(-_MAX_BIAS, _MAX_BIAS)
            mod.step_bias[t] = b.to(torch.float32).view(mod.step_bias.shape[1:])

        def post(mod, args, out, _name=name):
            counts[_name] = counts.get(_name, 0.0) + _channel_count(out) / (out.numel() / out.shape[1])

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        simulate(snn, images, steps, chunk=1)
    finally:
        for h in handles:
            h.remove()
    return {name: m.step_bias.clone() for name, m in neurons.items()}, counts


@pytest.mark.parametrize("builder", [_Residual, _mlp])
@pytest.mark.parametrize("solver", ["linear", "quantile"])
@pytest.mark.parametrize("batch", [16, 100])
def test_layerwise_step_bias_fit_equals_the_step_major_fit_bit_for_bit(images, builder, solver, batch, monkeypatch):
    """The statistics and neuron updates go ``batch`` images at a time (16: 6 spans of 16
    and one of 4); the stateless ops between layers run on all 100 here, as in the
    reference, so that the comparison is exact (their chunking is checked above)."""
    import annsnn.calibration  # noqa: F401
    import sys

    module = sys.modules["annsnn.calibration"]
    monkeypatch.setattr(module, "run_layerwise", lambda snn, x, steps, *, batch, **kw: run_layerwise(snn, x, steps, batch=len(x), **kw))
    T = 6
    snn = _snn(builder, images, T)
    reference = copy.deepcopy(snn)
    want, counts = _reference_step_fit(reference, images[:100], T, solver)
    fit = fit_step_bias(snn, images[:100], T, solver, batch=batch)
    got = {name: m.step_bias for name, m in snn.neuron_layers().items()}
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
        assert bool(want[name].ne(0).any()), f"{name}: an all-zero bias would make the check vacuous"
        target = ann_channel_targets(reference, images[:100])[name][0].clamp(max=1.0)
        assert fit.error_after[name] == float((target - counts[name] / T).abs().mean())


def test_buffer_pool_hands_back_the_smallest_free_buffer_that_fits():
    from annsnn.layerwise import BufferPool

    pool = BufferPool()
    big = pool.take((4, 100), torch.float32)  # 1,600 bytes
    small = pool.take((10,), torch.int64)  # 80 bytes
    assert big.shape == (4, 100) and big.dtype == torch.float32 and small.dtype == torch.int64
    big_ptr, small_ptr = big.data_ptr(), small.data_ptr()
    pool.give(big)
    pool.give(small)
    again = pool.take((5, 4), torch.float32)  # 80 bytes: the small buffer fits, and is the smallest
    assert again.data_ptr() == small_ptr
    bits = pool.take((3, 7), torch.uint8)  # 21 bytes: only the big one is left
    assert bits.data_ptr() == big_ptr and bits.shape == (3, 7)
    fresh = pool.take((2,), torch.float32)  # nothing free: a new buffer
    assert fresh.data_ptr() not in (big_ptr, small_ptr)
    bits.fill_(7)
    again.fill_(1.5)
    assert int(bits.sum()) == 7 * 21 and float(again.sum()) == 1.5 * 20  # the views do not overlap


@pytest.mark.parametrize("builder", [_Residual, _mlp, _LinearBottleneck])
def test_layerwise_output_is_the_step_major_output_at_every_step(images, builder):
    """``output_step`` gives the graph output of each step, bit for bit as simulate(chunk=1)
    on the same images (simulate's running sum S_t differenced back to the step outputs)."""
    T = 5
    snn = _snn(builder, images, T)
    x = images[:32]
    got: list[torch.Tensor] = []
    run_layerwise(snn, x, T, batch=32, output_step=lambda t, out: got.append(out.clone()))
    sums = simulate(snn, x, list(range(1, T + 1)), chunk=1, readout_delay=0).outputs
    assert len(got) == T
    running = got[0].clone()
    assert torch.equal(running, sums[1])
    for t in range(1, T):
        running = running + got[t]  # simulate's order of summation
        assert torch.equal(running, sums[t + 1])


def test_readout_delay_choice_equals_a_simulate_reference(images):
    """choose_readout_delay (layer-major, 64 images at a time) against the same choice made
    from simulate's outputs (a second implementation, written here)."""
    from annsnn.calibration import choose_readout_delay

    T = 6
    snn = _snn(_Residual, images, T)
    x = images[:100]
    choice = choose_readout_delay(snn, x, T)
    with torch.no_grad():
        ann = torch.cat([snn.ann(x[:64]), snn.ann(x[64:])]).to(torch.float64)
    parts = [simulate(snn, x[i : i + 64], list(range(1, T + 1)), chunk=1, readout_delay=0).outputs for i in range(0, 100, 64)]
    sums = {t: torch.cat([p[t] for p in parts]) for t in range(1, T + 1)}
    readouts = [(sums[T] - sums[k] if k else sums[T]).to(torch.float64) for k in range(T)]  # float32 sums, as the simulator gives them
    agreement = [float((readouts[k].argmax(1) == ann.argmax(1)).double().mean()) for k in range(T)]
    mse = [float(((readouts[k] / (T - k) - ann) ** 2).mean()) for k in range(T)]
    assert choice.agreement == agreement
    assert choice.output_mse == mse
    assert choice.delay == min(range(T), key=lambda k: (mse[k], k))
    assert choose_readout_delay(snn, x, T, criterion="agreement").delay == max(range(T), key=lambda k: (agreement[k], -mse[k], -k))


def test_residual_add_writes_its_train_over_the_inputs_it_reads_last(images, monkeypatch):
    """The first residual add of the test net is the last reader of the block's input and of
    its branch, with the same shape: its train reuses one of their buffers instead of a new
    one (1 of the 5 spike trains), and every layer still sees the step-major run's values
    (checked above)."""
    import annsnn.layerwise as layerwise

    snn = _snn(_Residual, images, 4)
    made: list[tuple[int, ...]] = []
    real = PackedSpikes.empty

    def counted(*args, **kwargs):
        made.append(tuple(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(layerwise.PackedSpikes, "empty", staticmethod(counted))
    shapes: list[tuple[int, ...]] = []
    run_layerwise(snn, images[:8], 4, layer_step=lambda name, m, x, t: (shapes.append(tuple(x.shape)) if t == 0 else None) or m(x))
    assert len(shapes) == 5
    assert len(made) == 4


@pytest.mark.parametrize("batch", [4, 64])
@pytest.mark.parametrize("stream", [2, 4])
def test_a_stateless_value_that_later_layers_read_again_is_computed_once_per_step(images, batch, stream):
    """In a linear-bottleneck stream (MobileNetV2) each block's expansion neurons read
    ``r_k``, which the next block reads again through ``r_(k+1)``. Recomputing the stream
    from its spike trains at every reader ran p1 (the stream's start) once per later neuron
    layer at each step: 4 T times per image span, not T (the projections were a quarter of
    the conversion's convolution work on torchvision's mobilenet_v2). Such a value is now
    cached as a float train by its first reader when that train is no larger than the
    largest spike train the run has cached (the stem's here, at ``stream`` = 2), so p1 runs
    once per step and span. A larger one (``stream`` = 4) is recomputed as before: memory
    over time. Either way every layer sees the step-major run's values (checked above)."""
    T = 5
    snn = _snn(lambda: _LinearBottleneck(stream), images, T)
    calls: list[int] = []
    p1 = dict(snn.graph.named_modules())["p1"]
    handle = p1.register_forward_hook(lambda mod, args, out: calls.append(int(out.shape[0])))
    try:
        run_layerwise(snn, images[:10], T, batch=batch)
    finally:
        handle.remove()
    spans = -(-10 // batch)
    readers = 1 if stream == 2 else 4  # the stream's first reader only, or each expansion and the head
    assert len(calls) == readers * T * spans
    assert sum(calls) == readers * 10 * T


class _InPlaceThroughAView(nn.Module):
    """``y`` is read by two layers; after the first, an op writes into it through a view
    (``y[:, :1].mul_(3)``), and ``w = c4(y)`` was read before the write."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.c1 = nn.Conv2d(16, 2, 1, stride=2)
        self.c2, self.c3, self.c4 = nn.Conv2d(2, 8, 1), nn.Conv2d(1, 8, 1), nn.Conv2d(2, 8, 1)
        self.fc = nn.Linear(3 * 8 * 16, 10)

    def forward(self, x):
        y = self.c1(F.relu(self.stem(x)))
        a = F.relu(self.c2(y))
        w = self.c4(y)
        z = y[:, :1]
        z.mul_(3.0)
        b = F.relu(self.c3(z))
        return self.fc(torch.cat([a.flatten(1), b.flatten(1), F.relu(w).flatten(1)], 1))


class _OutKeyword(_InPlaceThroughAView):
    """The same write into ``y``'s view, through ``out=`` instead of an in-place method."""

    def forward(self, x):
        y = self.c1(F.relu(self.stem(x)))
        a = F.relu(self.c2(y))
        w = self.c4(y)
        z = y[:, :1]
        z2 = torch.add(z, z, out=z)
        b = F.relu(self.c3(z2))
        return self.fc(torch.cat([a.flatten(1), b.flatten(1), F.relu(w).flatten(1)], 1))


class _HybridProduct(nn.Module):
    """A hybrid net: ``r`` is read first by an analog product (a layer with two inputs,
    computed over all images at once) and then by an IF layer (computed span by span)."""

    def __init__(self) -> None:
        super().__init__()
        self.l0, self.l1 = nn.Linear(64, 512), nn.Linear(512, 16)
        self.l2, self.l3, self.l4, self.l5 = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 32), nn.Linear(48, 10)

    def forward(self, x):
        r = self.l1(F.relu(self.l0(x.flatten(1))))
        p = self.l2(r) * self.l3(r)
        q = F.relu(self.l4(r))
        return self.l5(torch.cat([p, q], 1))


@pytest.mark.parametrize("builder, hybrid, batch", [(_InPlaceThroughAView, False, 64), (_OutKeyword, False, 64), (_HybridProduct, True, 4)])
def test_caching_never_changes_what_a_layer_reads(images, builder, hybrid, batch):
    """Two ways a cached stateless value could differ from the recomputed one (found in
    review): an op that writes into it through a view (in place, or with ``out=``) would
    change the cached train for its later readers; and a value computed over all images by a layer with several
    inputs, then read in spans of ``batch`` images, rounds as the all-image matmul does,
    not as a step-major run of each span. Against simulate(chunk=1) per span, bit for
    bit: both failed before caching was limited to graphs and runs where neither can
    happen."""
    T, x = 4, images[:10]
    torch.manual_seed(0)
    options = ConversionOptions.plain(mode=parse_mode("99.99"), channel_wise=True, v_init=0.5, T=T, threshold="if-search", bias="none", readout_delay=0, hybrid=hybrid)
    snn = ann_to_snn(builder().eval().requires_grad_(False), [images], input_shape=tuple(images.shape[1:]), options=options)[0]
    spans = [(lo, min(lo + batch, 10)) for lo in range(0, 10, batch)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the Linear's rounding depends on the batch there
    try:
        parts = [_record(snn, lambda lo=lo, hi=hi: simulate(snn, x[lo:hi], T, chunk=1)) for lo, hi in spans]
        layerwise = _record(snn, lambda: run_layerwise(snn, x, T, batch=batch))
    finally:
        torch.set_num_threads(threads)
    reference = {name: [(torch.cat([p[name][t][0] for p in parts]), torch.cat([p[name][t][1] for p in parts])) for t in range(T)] for name in parts[0]}
    assert set(reference) == set(layerwise) and len(reference) == {_InPlaceThroughAView: 4, _OutKeyword: 4, _HybridProduct: 2}[builder]
    for name in reference:
        for t, ((xi, yi), (xj, yj)) in enumerate(zip(reference[name], layerwise[name])):
            assert torch.equal(xi, xj) and torch.equal(yi, yj), (name, t)


def test_a_pool_shared_by_runs_gets_every_buffer_back(images):
    """choose_readout_delay shares one BufferPool over its image chunks. Trains the graph
    output reads were never given back, so each run left its buffers lent and the next
    allocated new ones; a cached float train (32x a packed one per neuron) would leak
    the same way. After each run every buffer is back in the pool, and later runs reuse
    them: the pool's buffers stay as many as after the first run."""
    from annsnn.layerwise import BufferPool

    snn = _snn(_LinearBottleneck, images, 4)
    pool = BufferPool()
    sizes = []
    for _ in range(3):
        run_layerwise(snn, images[:10], 4, batch=4, pool=pool, output_step=lambda t, out: None)
        assert pool._lent == {}
        sizes.append(len(pool._free))
    assert sizes[0] == sizes[1] == sizes[2] > 0


def test_ann_channel_targets_equal_numpy_float64(images):
    """Per neuron layer: mean ANN activation / theta per channel and the share of positive
    activations, against numpy on the recorded activations (float64)."""
    snn = _snn(_Residual, images, 4)
    x = images[:150]  # 3 ANN batches, the last one partial
    targets = ann_channel_targets(snn, x)
    thresholds = snn.graph.meta["annsnn_thresholds"]
    modules = dict(snn.ann.named_modules())
    seen: dict[str, list[np.ndarray]] = {}
    handles = [modules[name].register_forward_hook(lambda mod, a, out, _n=name: seen.setdefault(_n, []).append(out.detach().numpy().astype(np.float64)))
               for name in targets]
    try:
        snn.ann(x)
    finally:
        for h in handles:
            h.remove()
    for name, (mean, active, shape) in targets.items():
        out = np.concatenate(seen[name])
        theta = thresholds[name].to(torch.float64).numpy()
        scaled = out / (theta[None] if theta.ndim else theta)
        axes = tuple(d for d in range(out.ndim) if d != 1)
        np.testing.assert_allclose(mean.numpy(), scaled.mean(axis=axes), rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(active.numpy(), (out > 0).mean(axis=axes))
        assert shape == out.shape[1:]
