"""Multi-threshold (burst) neurons, ``--max-spikes K`` (issue 26): up to K spikes per step."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from annsnn.artifact import load_snn, save_snn
from annsnn.convert import ConversionOptions
from annsnn.errors import UsageError
from annsnn.functional import if_soft_reset
from annsnn.layers import IFNeurons
from annsnn.modes import parse_mode
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate
from annsnn.thresholds import if_quantize, search_if_threshold


def _numpy_burst_if(x: np.ndarray, v0: float, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Second implementation, numpy float32: thresholds 1..K, each crossed one subtracts 1."""
    v = np.full(x.shape[1:], v0, dtype=np.float32)
    spikes = np.zeros_like(x, dtype=np.float32)
    for t in range(x.shape[0]):
        v = v + x[t]
        s = np.zeros_like(v)
        for k in range(1, K + 1):  # one comparison per threshold level
            s += (v >= k).astype(np.float32)
        spikes[t] = s
        v = v - s
    return spikes, v


# ----- the neuron --------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 12), st.lists(st.floats(0.0, 7.0, width=32), min_size=1, max_size=40))
def test_k_spike_rate_equals_clipped_quantised_input(K, T, values):
    """Constant input x (in thresholds), v_init 1/2, T steps: the K-spike neuron emits
    ``clip(floor(x T + 1/2), 0, K T)`` spikes (closed form; values within 1e-4 of a rounding
    edge are left out, where float32 sums of x may fall either side)."""
    x = np.array(values, dtype=np.float32)
    edge = np.abs((x.astype(np.float64) * T + 0.5) - np.round(x.astype(np.float64) * T + 0.5)) < 1e-4
    x = x[~edge]
    if x.size == 0:
        return
    neuron = IFNeurons(0.5, max_spikes=K)
    neuron.steps = T
    out = neuron(torch.from_numpy(np.tile(x, (T, 1))))
    expected = np.clip(np.floor(x.astype(np.float64) * T + 0.5), 0, K * T)
    assert out.sum(0).numpy().astype(np.float64).tolist() == expected.tolist()
    assert float(out.max()) <= K and bool((out == out.round()).all())


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 10), st.integers(0, 2**31 - 1))
def test_k_spike_neuron_equals_numpy_reference(K, T, seed):
    """Random (also negative) inputs: the same spikes and potentials as a per-threshold numpy loop."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, K + 1.5, size=(T, 3, 5)).astype(np.float32)
    spikes, v = if_soft_reset(torch.from_numpy(x.copy()), torch.full((3, 5), 0.5), max_spikes=K)
    ref_spikes, ref_v = _numpy_burst_if(x, 0.5, K)
    assert np.array_equal(spikes.numpy(), ref_spikes)
    assert np.array_equal(v.numpy(), ref_v)


def test_one_spike_is_the_binary_if_bit_for_bit():
    x = torch.randn(9, 4, 7)
    a, va = if_soft_reset(x, torch.zeros(4, 7))
    b, vb = if_soft_reset(x, torch.zeros(4, 7), max_spikes=1)
    assert torch.equal(a, b) and torch.equal(va, vb) and set(a.unique().tolist()) <= {0.0, 1.0}


def test_bad_max_spikes_is_refused():
    with pytest.raises(UsageError, match="max-spikes"):
        IFNeurons(0.5, max_spikes=0)
    with pytest.raises(UsageError, match="max-spikes"):
        ConversionOptions(max_spikes=0)


def test_threshold_search_with_k_is_the_binary_search_at_k_times_t():
    """Q with K spikes over T steps at threshold theta is Q_{KT}(x; K theta): the same levels
    theta/T, the clip at K theta. So the searched ceiling is the binary one at K T."""
    x = torch.linspace(0, 5, 501, dtype=torch.float64)
    theta, T, K = 0.7, 3, 4
    k_rate = torch.clamp(torch.floor(x * T / theta + 0.5), 0, K * T) * theta / T
    assert torch.allclose(k_rate, if_quantize(x, K * theta, K * T))
    hist = torch.tensor(np.random.default_rng(0).integers(0, 50, size=64), dtype=torch.float64)
    lam, _ = search_if_threshold(hist, 0.1, K * T)
    assert float(lam) > 0


# ----- conversion, counting, save/load -------------------------------------------------------



def _convert(model, calib, T, K, bias="step", readout_delay=0):
    options = ConversionOptions.low_latency(T, max_spikes=K, bias=bias, readout_delay=readout_delay, maxpool="avg")
    return ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=options)[0]


def test_thresholds_divide_the_ceiling_by_k(cnn_and_data):
    """theta_K = (argmin at K T) / K per channel: K spikes of theta_K reach the binary search's
    ceiling at K T, and each spike is worth 1/K of it."""
    model, calib, _ = cnn_and_data
    one = _convert(model, calib, 8, 1, bias="none")
    two = _convert(model, calib, 4, 2, bias="none")
    for name in one.neuron_layers():
        assert torch.allclose(two.graph.meta["annsnn_thresholds"][name] * 2, one.graph.meta["annsnn_thresholds"][name])
        assert two.neuron_layers()[name].max_spikes == 2


def test_bursts_bring_the_output_closer_to_the_ann_at_low_T(cnn_and_data):
    """At T = 2 on held-out training images, the mean squared error of the SNN's mean readout
    against the ANN's output falls as K grows (1 -> 2 -> 4)."""
    model, calib, held = cnn_and_data
    T = 2
    with torch.no_grad():
        ann = model(held).double()
    error = {}
    for K in (1, 2, 4):
        out = simulate(_convert(model, calib, T, K), held, T).outputs[T].double() / T
        error[K] = float(((out - ann) ** 2).mean())
    assert error[4] < error[2] < error[1], error


def test_burst_counting_matches_a_hand_count():
    """Linear(2->3) -> ReLU -> Linear(3->2), one neuron layer with K = 3. Each spike of a burst
    is one synaptic event: the second layer's ACs are (spikes of the burst layer) x 2 outputs
    (its fan-out), counted by hand from the numpy neuron above; spikes and bias ACs too."""
    from annsnn.counting import SnnCounter

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    calib = torch.rand(64, 2) * 2
    options = ConversionOptions.plain(mode=parse_mode("max"), v_init=0.5, max_spikes=3)
    snn = ann_to_snn(model, [calib], input_shape=(2,), options=options)[0]
    (name, neuron), = snn.neuron_layers().items()
    theta = snn.graph.meta["annsnn_thresholds"][name].double()
    x = torch.rand(5, 2) * 3
    T = 6
    with torch.no_grad():
        current = (model[0](x).double() / theta).float().numpy()  # the neurons' input current, constant over T
    spikes, _ = _numpy_burst_if(np.tile(current, (T, 1, 1)), 0.5, 3)
    assert spikes.max() > 1  # the test exercises bursts
    counter = SnnCounter(snn, "direct", T)
    counter.attach(len(x))
    try:
        simulate(snn, x, T, on_chunk=counter.on_chunk)
    finally:
        counter.detach()
    per_step = spikes.sum(axis=(1, 2)).astype(np.float64)  # spikes per step, all images
    assert counter.layers[name].spikes.tolist() == per_step.tolist()
    sink = [n for n, layer in counter.layers.items() if n != name and layer.role == "synaptic"]
    assert len(sink) == 1
    assert counter.layers[sink[0]].synaptic_acs.tolist() == (2 * per_step).tolist()


@pytest.mark.parametrize("K", [2, 3])
def test_burst_step_bias_is_prefix_consistent_and_round_trips(cnn_and_data, tmp_path, K):
    model, calib, held = cnn_and_data
    N = 4
    snn = _convert(model, calib, N, K, readout_delay="auto")
    x = held[:64]
    full = simulate(snn, x, [1, 2, 3, N, 6])
    for k in (1, 2, 3, N, 6):
        assert torch.equal(simulate(snn, x, k).outputs[k], full.outputs[k])
    path = tmp_path / "burst.snn.pt"
    save_snn(snn, path)
    back = load_snn(path)
    assert all(m.max_spikes == K for m in back.neuron_layers().values())
    assert back.meta["options"]["max_spikes"] == K
    assert torch.equal(simulate(back, x, 6).outputs[6], full.outputs[6])


def test_burst_bias_fit_reduces_the_per_layer_error(cnn_and_data):
    """The step-bias fit's own record: with K = 2 every layer's mean channel error after the
    fit is below the one before it (on the calibration images)."""
    model, calib, _ = cnn_and_data
    snn = _convert(model, calib, 3, 2)
    fit = snn.meta["bias_fit"]
    assert all(fit["error_after"][n] < fit["error_before"][n] for n in fit["error_after"])


def test_nir_export_refuses_bursts_in_one_line(cnn_and_data, tmp_path):
    from annsnn.nir_io import export_nir

    model, calib, _ = cnn_and_data
    snn = _convert(model, calib, 4, 2, bias="none")
    with pytest.raises(UsageError) as info:
        export_nir(snn, tmp_path / "x.nir")
    message = str(info.value)
    assert "--max-spikes" in message and "\n" not in message


@pytest.mark.parametrize("K", [1, 3])
def test_burst_step_bias_fit_runs_as_fitted(cnn_and_data, K):
    """The layer-major fit's own record of each layer's error after the fit equals the error of
    the fitted network run step-major (simulate) on the same images: the fit saw the spike
    trains (counts up to K) the network gives."""
    from annsnn.calibration import ann_channel_targets

    model, calib, _ = cnn_and_data
    steps = 3
    snn = _convert(model, calib, steps, K)
    images = calib[:256]  # the bias images: the first bias_samples of the calibration set
    targets = ann_channel_targets(snn, images)
    counts: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, a, out, _n=n: counts.__setitem__(_n, counts.get(_n, 0) + out.sum(dim=[d for d in range(out.dim()) if d != 1], dtype=torch.float64)))
               for n, m in snn.neuron_layers().items()]
    simulate(snn, images, steps)
    for h in handles:
        h.remove()
    fit = snn.meta["bias_fit"]
    for name in snn.neuron_layers():
        per_sample = int(np.prod(targets[name][2][1:])) * len(images)
        error = float((targets[name][0].clamp(max=float(K)) - counts[name] / (steps * per_sample)).abs().mean())
        assert error == pytest.approx(fit["error_after"][name], rel=1e-6, abs=1e-9)
