"""Low-latency calibration (issue 12): T-aware thresholds, bias passes, per-step bias."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from annsnn.artifact import load_snn, save_snn
from annsnn.calibration import CALIBRATIONS, ann_channel_targets
from annsnn.convert import ConversionOptions
from annsnn.errors import UsageError
from annsnn.layers import IFNeurons
from annsnn.modes import parse_mode
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate
from annsnn.thresholds import if_quantization_errors, if_quantize, search_if_threshold



# ----- (a) threshold search -------------------------------------------------------------


def _brute_force(hist: np.ndarray, width: float, T: int) -> np.ndarray:
    centres = (np.arange(len(hist)) + 0.5) * width
    out = []
    for j in range(len(hist)):
        theta = (j + 1) * width
        q = np.clip(np.floor(centres * T / theta + 0.5), 0, T) * theta / T
        out.append(float((hist * (centres - q) ** 2).sum()))
    return np.array(out)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=2, max_size=80), st.integers(1, 40), st.floats(0.01, 10.0))
def test_threshold_search_equals_brute_force_numpy(counts, T, width):
    hist = np.array(counts, dtype=np.float64)
    expected = _brute_force(hist, width, T)
    errors = if_quantization_errors(torch.tensor(hist), width, T).numpy()
    assert np.allclose(errors, expected, rtol=1e-9, atol=1e-9 * max(1.0, float((hist * ((np.arange(len(hist)) + 0.5) * width) ** 2).sum())))
    theta, err = search_if_threshold(torch.tensor(hist), width, T)
    if hist.sum() > 0:
        best = int(np.argmin(expected))
        assert expected[best] == pytest.approx(float(err), rel=1e-9, abs=1e-9 * (1 + expected.max()))
        assert float(err) <= expected.min() * (1 + 1e-9) + 1e-9 * (1 + expected.max())


def test_threshold_search_is_global_not_greedy():
    """A dense cluster and a thin far tail: the error has a local minimum near the cluster,
    rises, and falls lower later. A greedy stop at the first rise (torch.ao
    HistogramObserver's search) keeps theta = 52 with error 243,845; the global argmin
    is theta = 124 with error 104,385 (values of this histogram, bin width 1, T = 8)."""
    hist = torch.zeros(200, dtype=torch.float64)
    hist[10:20] = 1000.0
    hist[150:160] = 2.0
    errors = if_quantization_errors(hist, 1.0, 8)
    greedy = next(j for j in range(1, 200) if errors[j] > errors[j - 1]) - 1
    theta, err = search_if_threshold(hist, 1.0, 8)
    assert (greedy + 1, float(errors[greedy])) == (52, 243845.0)
    assert (float(theta), float(err)) == (124.0, 104385.0)


@pytest.mark.parametrize("T", [1, 4, 16])
def test_if_error_closed_form_on_uniform_distribution(T):
    """x ~ U[0, a], theta <= a: E = (theta/T)^2 / 12 * theta/a (rounding, T levels, the first
    half-level rounds to 0 with the same error) + (a - theta)^3 / (3a) (clipping), per value.
    A fine uniform histogram matches it, and the argmin matches the closed form's."""
    bins, a = 4096, 1.0
    width = a / bins
    hist = torch.ones(bins, dtype=torch.float64)
    errors = if_quantization_errors(hist, width, T) / bins
    theta = torch.arange(1, bins + 1, dtype=torch.float64) * width
    closed = (theta / T) ** 2 / 12 * theta / a + (a - theta) ** 3 / (3 * a)
    assert torch.allclose(errors, closed, rtol=2e-3, atol=1e-7)
    assert float(theta[errors.argmin()]) == pytest.approx(float(theta[closed.argmin()]), abs=3 * width)


def test_if_quantize_is_the_if_neuron_rate():
    """The IF neuron with v_init 1/2 and constant input x/theta emits Q_T(x)/theta*T spikes."""
    x = torch.linspace(0, 2.0, 101)
    theta, T = 1.3, 7
    neuron = IFNeurons(0.5)
    neuron.steps = T
    spikes = neuron((x / theta).unsqueeze(0).expand(T, -1).reshape(T, -1))
    assert torch.allclose(spikes.sum(0) * theta / T, if_quantize(x, theta, T), atol=1e-6)


# ----- helpers: a small trained CNN -----------------------------------------------------



def _convert(model, calib, T, name, v_init=0.5, step_solver="linear"):
    threshold, bias = CALIBRATIONS[name]
    options = ConversionOptions.plain(mode=parse_mode("99.99"), channel_wise=threshold == "if-search", v_init=v_init,
                                T=T if name != "none" else None, threshold=threshold, bias=bias, bias_samples=256, step_solver=step_solver)
    return ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=options)[0]


def _layer_errors(snn, x, T) -> dict[str, tuple[float, float]]:
    """Per neuron layer at T steps, with e = rate * theta - ANN activation: (mean |e| over
    every neuron, mean |mean of e over a channel| over channels)."""
    thresholds = snn.graph.meta["annsnn_thresholds"]
    ann_out: dict[str, torch.Tensor] = {}
    snn_out: dict[str, torch.Tensor] = {}
    modules = dict(snn.ann.named_modules())
    handles = [modules[n].register_forward_hook(lambda m, a, o, _n=n: ann_out.__setitem__(_n, o)) for n in snn.neuron_layers()]
    with torch.no_grad():
        snn.ann(x)
    for h in handles:
        h.remove()
    handles = []
    for name, module in snn.neuron_layers().items():
        handles.append(module.register_forward_hook(lambda m, a, o, _n=name: snn_out.__setitem__(_n, snn_out.get(_n, 0) + o.reshape(m.steps, -1, *o.shape[1:]).sum(0))))
    simulate(snn, x, T)
    for h in handles:
        h.remove()
    out = {}
    for n in snn.neuron_layers():
        e = (snn_out[n] / T * thresholds[n] - ann_out[n]).double()
        out[n] = (float(e.abs().mean()), float(e.transpose(0, 1).reshape(e.shape[1], -1).mean(1).abs().mean()))
    return out


# ----- each method reduces the per-layer error at T = N ---------------------------------


@pytest.mark.parametrize("name, which", [("threshold", 0), ("bias", 1), ("step-bias", 1), ("threshold+bias", 1), ("threshold+step-bias", 0)])
def test_each_method_reduces_per_layer_error_at_T(cnn_and_data, name, which):
    """On held-out training images: the T-aware threshold reduces the per-neuron error
    (which = 0); the bias passes reduce the per-channel mean error they fit (which = 1),
    in every layer after the first (the first layer's input is exact)."""
    model, calib, held = cnn_and_data
    T = 8
    plain = _layer_errors(_convert(model, calib, T, "none"), held, T)
    method = _layer_errors(_convert(model, calib, T, name), held, T)
    total_plain = sum(v[which] for v in plain.values())
    total = sum(v[which] for v in method.values())
    assert total < 0.8 * total_plain, (plain, method)
    last = list(plain)[-1]
    assert method[last][which] < plain[last][which]


def test_default_pipeline_beats_plain_on_accuracy_at_low_T(cnn_and_data):
    from annsnn.data import load_dataset

    model, calib, _ = cnn_and_data
    x, y = load_dataset("digits", "test").tensors  # type: ignore[attr-defined]
    x, y = x[:360], y[:360]
    with torch.no_grad():
        ann = float((model(x).argmax(1) == y).float().mean())
    T = 5
    plain = float((simulate(_convert(model, calib, T, "none", v_init=0.0), x, T).predictions(T) == y).float().mean())
    ours = float((simulate(_convert(model, calib, T, next(iter(CALIBRATIONS))), x, T).predictions(T) == y).float().mean())
    assert ours > plain + 0.2
    assert ours > ann - 0.05


# ----- prefix consistency and T > N ------------------------------------------------------


@pytest.mark.parametrize("solver", ["linear", "quantile"])
def test_step_bias_is_prefix_consistent(cnn_and_data, solver):
    model, calib, held = cnn_and_data
    N = 8
    snn = _convert(model, calib, N, "threshold+step-bias", step_solver=solver)
    assert all(m.bias_steps == N for m in snn.neuron_layers().values())
    x = held[:64]
    full = simulate(snn, x, [3, 5, N, 12])
    for k in (3, 5, N, 12):
        alone = simulate(snn, x, k)
        assert torch.equal(alone.outputs[k], full.outputs[k])
    chunked = simulate(snn, x, [N, 12], chunk=3)
    assert torch.equal(chunked.outputs[12], full.outputs[12])


def test_beyond_N_the_last_step_bias_repeats():
    bias = torch.tensor([[0.25], [0.5]])
    neuron = IFNeurons(0.0, step_bias=bias)
    neuron.steps = 4
    x = torch.zeros(4, 1)
    out = neuron(x)
    # v: 0.25, 0.75, 1.25 -> spike (0.25), 0.75
    assert out.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]


# ----- artifact round trip -----------------------------------------------------------------


@pytest.mark.parametrize("solver", ["linear", "quantile"])
def test_save_load_round_trip_keeps_calibration_bit_identical(cnn_and_data, tmp_path, solver):
    model, calib, held = cnn_and_data
    snn = _convert(model, calib, 6, "threshold+step-bias", step_solver=solver)
    path = tmp_path / "m.snn.pt"
    save_snn(snn, path)
    back = load_snn(path)
    for name, module in snn.neuron_layers().items():
        other = back.neuron_layers()[name]
        assert module.step_bias is not None and torch.equal(module.step_bias, other.step_bias)
        assert module.step_bias.dtype == other.step_bias.dtype
    assert back.meta["options"]["T"] == 6 and back.meta["options"]["bias"] == "step" and back.meta["options"]["threshold"] == "if-search"
    assert back.meta["calibrated_T"] == 6 and back.meta["bias_fit"]["samples"] == 256
    assert back.meta["options"]["step_solver"] == solver
    assert torch.equal(simulate(back, held[:32], 9).outputs[9], simulate(snn, held[:32], 9).outputs[9])


def test_options_need_T_for_calibration():
    with pytest.raises(UsageError, match="--T"):
        ConversionOptions.plain(threshold="if-search")
    with pytest.raises(UsageError, match="bias method"):
        ConversionOptions.plain(bias="sometimes", T=4)  # type: ignore[arg-type]


def test_targets_use_recorded_thresholds(cnn_and_data):
    model, calib, _ = cnn_and_data
    snn = _convert(model, calib, 4, "threshold")
    targets = ann_channel_targets(snn, calib[:64])
    assert set(targets) == set(snn.neuron_layers())
    for mean, active, _ in targets.values():
        assert bool(((active >= 0) & (active <= 1)).all()) and bool((mean >= 0).all())


def test_per_step_bias_adds_are_counted_as_acs(cnn_and_data):
    """One AC per neuron and step for a layer with a step bias; none without."""
    from annsnn.counting import SnnCounter

    model, calib, held = cnn_and_data
    snn = _convert(model, calib, 4, "threshold+step-bias")
    x = held[:8]
    T = 6
    counter = SnnCounter(snn, "direct", T)
    counter.attach(len(x))
    try:
        simulate(snn, x, T, on_chunk=counter.on_chunk)
    finally:
        counter.detach()
    for name, module in snn.neuron_layers().items():
        layer = counter.layers[name]
        assert layer.bias_acs.tolist() == [float(layer.neurons * len(x))] * T
    plain = _convert(model, calib, 4, "none")
    counter = SnnCounter(plain, "direct", T)
    counter.attach(len(x))
    try:
        simulate(plain, x, T, on_chunk=counter.on_chunk)
    finally:
        counter.detach()
    assert all(float(counter.layers[n].bias_acs.sum()) == 0.0 for n in plain.neuron_layers())


# ----- CLI: defaults, recorded settings, training data only ----------------------------------


def test_cli_default_convert_calibrates_on_train_only_and_records_it(capsys, tmp_path, monkeypatch):
    """`annsnn convert` with no calibration flag runs the default pipeline for T=32, never
    opens the test split (the loader raises if asked), and records method and N."""
    import json

    import annsnn.data
    from annsnn.cli.main import main
    from annsnn.zoo import embedded_checkpoint

    real = annsnn.data.load_dataset
    opened = []

    def guarded(name, split, *args, **kwargs):
        opened.append(split)
        if split != "train":
            raise AssertionError(f"calibration opened the {split} split")
        return real(name, split, *args, **kwargs)

    monkeypatch.setattr(annsnn.data, "load_dataset", guarded)
    target = tmp_path / "d.snn.pt"
    try:
        main(["convert", str(embedded_checkpoint()), "--calib-samples", "512", "--out", str(target), "--json", str(tmp_path / "c.json")])
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err
    out = capsys.readouterr().out
    assert opened == ["train"]
    assert "for T=32" in out
    options = json.loads((tmp_path / "c.json").read_text())["report"]["options"]
    assert (options["T"], options["threshold"], options["bias"], options["channel_wise"], options["v_init"]) == (32, "if-search", "step", True, 0.5)
    snn = load_snn(target)
    assert snn.meta["calibrated_T"] == 32
    written = json.loads((tmp_path / "c.json").read_text())
    assert written["calibrated_T"] == 32 and written["readout_delay"] == snn.meta["readout_delay"] == written["delay_choice"]["delay"]
    assert len(written["delay_choice"]["agreement"]) == 32 and written["delay_choice"]["samples"] == 256  # images 257..512
    assert all(m.bias_steps == 32 for m in snn.neuron_layers().values())


def test_cli_calibration_none_v_init_0_is_plain_normalization(capsys, tmp_path):
    import json

    from annsnn.cli.main import main
    from annsnn.zoo import embedded_checkpoint

    try:
        main(["convert", str(embedded_checkpoint()), "--calibration", "none", "--v-init", "0", "--calib-samples", "256", "--out", str(tmp_path / "p.snn.pt"), "--json", str(tmp_path / "p.json")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    options = json.loads((tmp_path / "p.json").read_text())["report"]["options"]
    assert options == ConversionOptions.plain(mode=parse_mode("99.99")).to_dict()
    assert all(m.step_bias is None for m in load_snn(tmp_path / "p.snn.pt").neuron_layers().values())


def test_low_latency_options_are_the_cli_default():
    """The library's named pipeline is exactly what `annsnn convert` builds with no flags."""
    from annsnn.cli.main import _calibrated_options
    from annsnn.convert import ConversionOptions
    from annsnn.modes import parse_mode

    cli = _calibrated_options(parse_mode("99.99"), None, "all", 0.5, 32, "threshold+step-bias", 256, "spiking", False)
    assert ConversionOptions.low_latency(32) == cli
    assert ConversionOptions.low_latency(8, hybrid=True).hybrid and ConversionOptions.low_latency(8).T == 8


# ----- exact per-step solve of the step bias ------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 60), st.integers(0, 2**31 - 1))
def test_quantile_bias_fires_exactly_the_wanted_share_numpy(channels, m, seed):
    """Independent check: after adding b_c, exactly round(want_c * M) of channel c's
    potentials reach the threshold 1 (ties broken by continuous random values)."""
    from annsnn.calibration import quantile_bias

    rng = np.random.default_rng(seed)
    potential = rng.normal(0.3, 0.7, size=(channels, m))
    want = rng.uniform(0, 1, size=channels)
    b = quantile_bias(torch.tensor(potential), torch.tensor(want)).numpy()
    fired = (potential + b[:, None] >= 1.0).sum(1)
    assert fired.tolist() == np.round(want * m).astype(int).tolist()


def test_quantile_step_bias_meets_the_channel_targets_the_linear_step_misses(cnn_and_data):
    """On the images it is fitted on, the quantile solve makes every channel's spike count
    meet its cumulative target at each step, so the per-channel mean error at T = N is
    smaller than the linearised solve's in total and in the last layer."""
    model, calib, _ = cnn_and_data
    T = 8
    images = calib[:256]
    errors = {}
    for solver in ("linear", "quantile"):
        options = ConversionOptions.low_latency(T, step_solver=solver)
        snn = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=options)[0]
        assert snn.meta["options"]["step_solver"] == solver
        errors[solver] = _layer_errors(snn, images, T)
    linear = sum(v[1] for v in errors["linear"].values())
    quantile = sum(v[1] for v in errors["quantile"].values())
    last = list(errors["linear"])[-1]
    assert quantile < 0.8 * linear, errors
    assert errors["quantile"][last][1] < errors["linear"][last][1]


def test_cli_step_solver_flag_reaches_the_options_and_needs_a_step_bias():
    from annsnn.cli.main import _calibrated_options

    args = (parse_mode("99.99"), None, "all", 0.5, 16)
    assert _calibrated_options(*args, "threshold+step-bias", 256, "spiking", False, "quantile").step_solver == "quantile"
    assert _calibrated_options(*args, "threshold+step-bias", 256, "spiking", False, "linear").step_solver == "linear"
    assert _calibrated_options(*args, "none", None, "spiking", False).step_solver == "linear"
    with pytest.raises(UsageError, match="--step-solver"):
        _calibrated_options(*args, "threshold+bias", 256, "spiking", False, "quantile")
    with pytest.raises(UsageError, match="step solver"):
        ConversionOptions.low_latency(8, step_solver="exact")


# ----- threshold scale ------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.5, 0.9, 1.25])
def test_threshold_scale_multiplies_each_if_search_threshold(cnn_and_data, scale):
    """theta = scale * argmin E(theta), per channel: the recorded thresholds of a scaled
    conversion are the unscaled search's times the factor (the search itself is checked
    against a numpy brute force above), and nothing else in the network changes."""
    model, calib, _ = cnn_and_data
    base = ConversionOptions.plain(mode=parse_mode("99.99"), channel_wise=True, v_init=0.5, T=8, threshold="if-search")
    plain = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=base)[0]
    scaled = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=dataclasses.replace(base, threshold_scale=scale))[0]
    theta0, theta1 = plain.graph.meta["annsnn_thresholds"], scaled.graph.meta["annsnn_thresholds"]
    assert theta0.keys() == theta1.keys() and len(theta0) >= 2
    for name in theta0:
        assert torch.allclose(theta1[name].double(), scale * theta0[name].double(), rtol=1e-6, atol=0)  # stored as float32
    assert scaled.meta["options"]["threshold_scale"] == scale


def test_threshold_scale_is_validated_and_needs_the_if_search():
    for bad in (0.0, -1.0, 5.0):
        with pytest.raises(UsageError, match="threshold-scale"):
            ConversionOptions.low_latency(8, threshold_scale=bad)
    with pytest.raises(UsageError, match="threshold-scale"):
        ConversionOptions.plain(threshold_scale=0.9)  # plain normalization has no IF search to scale


def test_cli_threshold_scale_flag_reaches_the_options():
    from annsnn.cli.main import _calibrated_options

    args = (parse_mode("99.99"), None, "all", 0.5, 16)
    assert _calibrated_options(*args, "threshold+step-bias", 256, "spiking", False, None, 0.8).threshold_scale == 0.8
    assert _calibrated_options(*args, "threshold", None, "spiking", False, None, None).threshold_scale == ConversionOptions.low_latency(16).threshold_scale
    assert _calibrated_options(*args, "none", None, "spiking", False).threshold_scale == 1.0
    with pytest.raises(UsageError, match="--threshold-scale"):
        _calibrated_options(*args, "step-bias", 256, "spiking", False, None, 0.8)


@pytest.mark.parametrize("name", list(CALIBRATIONS))
def test_calibrated_options_are_the_named_methods_with_the_pipeline_settings(name):
    """`ConversionOptions.calibrated(NAME, N)` is what `annsnn convert --calibration NAME --T N`
    builds (benchmarks use it too): the named methods, the pipeline's scale and solver only
    where they apply, plain normalization (no T) for `none`."""
    threshold, bias = CALIBRATIONS[name]
    options = ConversionOptions.calibrated(name, 16)
    pipeline = ConversionOptions.low_latency(16)
    assert (options.threshold, options.bias) == (threshold, bias)
    assert options.T == (None if name == "none" else 16)
    assert options.channel_wise == (threshold == "if-search")
    assert options.threshold_scale == (pipeline.threshold_scale if threshold == "if-search" else 1.0)
    assert options.step_solver == (pipeline.step_solver if bias == "step" else "linear")
    if name == "threshold+step-bias":
        assert options == pipeline



def _counts_hooks(neurons, store):
    """Forward hooks summing each IF layer's spikes per channel (every step of a call at
    once), float64: the independent count the layer-bias tests compare with."""
    handles = []
    for name, module in neurons.items():

        def hook(mod, args, out, _name=name):
            store[_name] = store.get(_name, 0.0) + out.transpose(0, 1).reshape(out.shape[1], -1).sum(1, dtype=torch.float64)

        handles.append(module.register_forward_hook(hook))
    return handles


@pytest.mark.parametrize("max_spikes", [1, 2])
def test_layer_bias_is_fitted_layer_by_layer_from_the_input(cnn_and_data, max_spikes):
    """Li et al.'s light calibration corrects one layer at a time, from the input, each for
    the upstream layers' corrections already in place. Independent re-computation: with
    every *upstream* bias installed and this layer's removed, simulate N steps and apply the
    closed-form step ``(mean_ann/theta - rate) / max(p, 0.05)``; it must give the fitted bias
    of every layer (and the recorded error before it, ``mean |target - rate|``). A fit that
    corrects all layers at once (each for the upstream biases of the previous pass) fails
    this: on the shared ResNet-20 it fell to 15 % top-1 at T=8. Burst neurons (K = 2) count
    up to K spikes per step and clip the target at K, not 1."""
    from annsnn.calibration import fit_layer_bias

    model, calib, _ = cnn_and_data
    T = 6
    options = ConversionOptions.plain(mode=parse_mode("99.99"), channel_wise=True, v_init=0.5, T=T, threshold="if-search", max_spikes=max_spikes,
                                      maxpool="spiking" if max_spikes == 1 else "avg")
    snn = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=options)[0]
    images = calib[:128]
    fit = fit_layer_bias(snn, images, T)
    neurons = snn.neuron_layers()
    fitted = {name: module.step_bias.clone() for name, module in neurons.items()}
    targets = ann_channel_targets(snn, images)
    names = list(neurons)
    assert len(names) >= 3
    for k, name in enumerate(names):
        for j, (other, module) in enumerate(neurons.items()):
            module.set_step_bias(fitted[other] if j < k else None)
        counts: dict = {}
        handles = _counts_hooks({name: neurons[name]}, counts)
        simulate(snn, images, T)
        for h in handles:
            h.remove()
        target, active, shape = targets[name]
        per_channel = int(np.prod(shape[1:])) * images.shape[0]
        rate = counts[name] / (T * per_channel)
        expected = ((target.clamp(max=float(max_spikes)) - rate) / active.clamp(min=0.05)).clamp(-1.0, 1.0)
        assert torch.allclose(fitted[name].double().reshape(-1), expected, atol=1e-5), name
        assert fit.error_before[name] == pytest.approx(float((target.clamp(max=float(max_spikes)) - rate).abs().mean()), rel=1e-9), name


# ----- readout delay ---------------------------------------------------------------------


def _pipeline(model, calib, T, **overrides):
    options = ConversionOptions.low_latency(T, mode=parse_mode("99.99"), **overrides)
    return ann_to_snn(model, [calib[:200], calib[200:]], input_shape=tuple(calib.shape[1:]), options=options)[0]


@pytest.mark.parametrize("k", [1, 3, 6])
def test_readout_delay_leaves_out_the_first_k_outputs(cnn_and_data, k):
    """outputs[T] = S_T - S_d(T) with S_t the plain cumulative readout and, calibrated for
    N=8, d(T) = min(k, floor(k T / 8), T-1): read from a delay-0 run at every step;
    bit-identical whatever the chunking."""
    model, calib, held = cnn_and_data
    snn = _pipeline(model, calib, 8, readout_delay=k)
    assert snn.meta["readout_delay"] == k
    x = held[:48]
    plain = simulate(snn, x, list(range(1, 11)), readout_delay=0, chunk=1)
    steps = [1, 2, 3, 5, 8, 10]
    for chunk in (1, 4, None):
        result = simulate(snn, x, steps, chunk=chunk)
        assert result.readout_delay == k
        for T in steps:
            d = min(k, k * T // 8, T - 1)
            expected = plain.outputs[T] - plain.outputs[d] if d else plain.outputs[T]
            torch.testing.assert_close(result.outputs[T], expected, rtol=0, atol=1e-4)
            assert torch.equal(result.outputs[T], simulate(snn, x, T, chunk=1).outputs[T])  # one run per T: the same bits


def test_readout_delay_is_chosen_by_output_mse_on_images_the_bias_fit_did_not_use(cnn_and_data, monkeypatch):
    """The bias is fitted on the first bias_samples calibration images, the delay is chosen on
    the next delay_samples; the recorded delay is the k in 0..N-1 whose mean readout
    (simulated with that delay, one run per k) has the smallest squared error against the
    ANN's output; ties: the smallest k."""
    import sys

    calibration = sys.modules["annsnn.calibration"]
    seen: dict = {}
    fit, choose = calibration.fit_step_bias, calibration.choose_readout_delay
    monkeypatch.setattr(calibration, "fit_step_bias", lambda snn, images, *a: seen.setdefault("bias", images.clone()) is None or fit(snn, images, *a))
    monkeypatch.setattr(calibration, "choose_readout_delay", lambda snn, images, *a, **kw: seen.setdefault("delay", images.clone()) is None or choose(snn, images, *a, **kw))
    model, calib, _ = cnn_and_data
    T = 6
    snn = _pipeline(model, calib, T, bias_samples=160, delay_samples=300)
    assert torch.equal(seen["bias"], calib[:160]) and torch.equal(seen["delay"], calib[160:460])
    images = calib[160:460]
    with torch.no_grad():
        ann = snn.ann(images).double()
    runs = [simulate(snn, images, T, readout_delay=k).outputs[T].double() for k in range(T)]
    agreement = [float((out.argmax(1) == ann.argmax(1)).double().mean()) for out in runs]
    mse = [float(((out / (T - k) - ann) ** 2).mean()) for k, out in enumerate(runs)]
    best = min(range(T), key=lambda k: (mse[k], k))
    assert snn.meta["readout_delay"] == best
    assert snn.meta["delay_choice"]["criterion"] == "output-mse"
    assert snn.meta["delay_choice"]["agreement"] == pytest.approx(agreement, abs=1e-12)
    assert snn.meta["delay_choice"]["output_mse"] == pytest.approx(mse, rel=1e-5)  # float32 sums: S_T - S_k vs a delayed sum
    assert snn.meta["delay_choice"]["samples"] == 300


def _delay_choice_of(monkeypatch, ann, steps, **kwargs):
    """choose_readout_delay with the ANN's outputs ``ann`` and the per-step output currents
    ``steps`` (one [images, classes] tensor per step) made up instead of simulated."""
    import sys
    from types import SimpleNamespace

    calibration = sys.modules["annsnn.calibration"]

    def fake_run(snn, images, T, batch, pool, output_step):
        for t in range(T):
            output_step(t, steps[t][: images.shape[0]])

    monkeypatch.setattr(calibration, "run_layerwise", fake_run)
    return calibration.choose_readout_delay(SimpleNamespace(ann=lambda x: ann[: x.shape[0]]), torch.zeros(ann.shape[0], 1), len(steps), **kwargs)


def test_readout_delay_ties_go_to_the_smallest_k(monkeypatch):
    """Equal steps: the mean readout is the same for every k, so every squared error and
    every agreement ties and both criteria pick k = 0. Agreement tied at 1.0 for k = 0, 1
    with a smaller error at k = 1 goes to k = 1 (its tie-break)."""
    ann = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    same = [torch.tensor([[0.5, 0.0], [0.0, 0.5]])] * 3
    for criterion in ("output-mse", "agreement"):
        chosen = _delay_choice_of(monkeypatch, ann, same, criterion=criterion)
        assert chosen.output_mse[0] == chosen.output_mse[1] == chosen.output_mse[2] and chosen.delay == 0, criterion
    # k = 0: means (5/6, 0), (0, 5/6): agree, error (1/6)^2 * 2 / 4; k = 1: (1, 0), (0, 1): agree, error 0;
    # k = 2: (1, 0), (0, 1) too: a tie on both measures, so the smaller k = 1 (sums exact in float32)
    steps = [torch.tensor([[0.5, 0.0], [0.0, 0.5]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    for criterion in ("output-mse", "agreement"):
        chosen = _delay_choice_of(monkeypatch, ann, steps, criterion=criterion)
        assert chosen.agreement == [1.0, 1.0, 1.0] and chosen.output_mse[1] == chosen.output_mse[2] == 0.0
        assert chosen.output_mse[0] == pytest.approx(1 / 72, abs=1e-7) and chosen.delay == 1, criterion


def _crafted_delay_choice(monkeypatch, **kwargs):
    """choose_readout_delay on two images, 3 classes, T = 2, with the ANN's outputs and the
    per-step output currents made up so that the criteria disagree. ANN: (1, 0, 0) and
    (0, 1, 0). Steps: o_1 = (3, 0, 0), (0, 3, 0); o_2 = (0.9, 0, 0), (0, 0.4, 0.5).
    k = 0: mean readouts (1.95, 0, 0), (0, 1.7, 0.25): both agree; squared error
    (0.95^2 + 0.7^2 + 0.25^2) / 6 = 0.2425. k = 1: (0.9, 0, 0), (0, 0.4, 0.5): one agrees;
    (0.1^2 + 0.6^2 + 0.5^2) / 6 = 0.1033. So agreement picks 0 and the output MSE picks 1."""
    ann = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    steps = [torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]]), torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.4, 0.5]])]
    return _delay_choice_of(monkeypatch, ann, steps, **kwargs)


def test_readout_delay_criteria_on_a_hand_made_case(monkeypatch):
    chosen = _crafted_delay_choice(monkeypatch)
    assert chosen.agreement == [1.0, 0.5]
    assert chosen.output_mse == pytest.approx([0.2425, 0.62 / 6], abs=1e-7)
    assert (chosen.delay, chosen.criterion) == (1, "output-mse")  # the default
    old = _crafted_delay_choice(monkeypatch, criterion="agreement")
    assert (old.delay, old.criterion) == (0, "agreement")  # the criterion before: most agreement, then the MSE
    with pytest.raises(UsageError, match="delay criterion"):
        _crafted_delay_choice(monkeypatch, criterion="kl")


def test_library_refuses_a_delay_criterion_with_a_fixed_delay():
    """The CLI refuses --delay-criterion with a fixed delay; the library did not: a caller's
    ``delay_criterion="agreement"`` beside ``readout_delay=3`` was silently ignored."""
    with pytest.raises(UsageError, match="delay-criterion.*fixed"):
        ConversionOptions.low_latency(8, readout_delay=3, delay_criterion="agreement")
    with pytest.raises(UsageError, match="delay-criterion.*fixed"):
        ConversionOptions.calibrated("none", None, delay_criterion="agreement")
    assert ConversionOptions.low_latency(8, readout_delay=3).delay_criterion == "output-mse"  # the default stays valid


def test_readout_delay_options_are_validated():
    assert ConversionOptions.low_latency(8).readout_delay == "auto"
    assert ConversionOptions.low_latency(8).delay_criterion == "output-mse"
    assert ConversionOptions.low_latency(8, delay_criterion="agreement").to_dict()["delay_criterion"] == "agreement"
    with pytest.raises(UsageError, match="delay-criterion"):
        ConversionOptions.low_latency(8, delay_criterion="kl")
    assert ConversionOptions.calibrated("threshold", 8).readout_delay == "auto"
    assert ConversionOptions.calibrated("none", None).readout_delay == 0
    for bad in (-1, 8, 1.5, "sometimes", True):
        with pytest.raises(UsageError, match="readout-delay"):
            ConversionOptions.low_latency(8, readout_delay=bad)
    with pytest.raises(UsageError, match="--T"):
        ConversionOptions.plain(readout_delay="auto")
    with pytest.raises(UsageError, match="delay samples"):
        ConversionOptions.low_latency(8, delay_samples=0)


def test_auto_readout_delay_without_spare_calibration_images_is_refused(cnn_and_data):
    model, calib, _ = cnn_and_data
    options = ConversionOptions.low_latency(4, mode=parse_mode("99.99"), bias_samples=256)
    with pytest.raises(UsageError, match="calibration images the bias fit does not use"):
        ann_to_snn(model, [calib[:256]], input_shape=tuple(calib.shape[1:]), options=options)


def test_cli_readout_delay_flag_and_the_early_refusal(capsys, tmp_path):
    from annsnn.cli.main import _calibrated_options, main
    from annsnn.zoo import embedded_checkpoint

    args = (parse_mode("99.99"), None, "all", 0.5, 16, "threshold+step-bias", 256, "spiking", False, None, None)
    assert _calibrated_options(*args, 3).readout_delay == 3
    assert _calibrated_options(*args, None).readout_delay == "auto"
    target = tmp_path / "d.snn.pt"
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(embedded_checkpoint()), "--calib-samples", "256", "--out", str(target)])
    assert exc.value.code != 0 and not target.exists()
    err = capsys.readouterr().err
    assert "beyond the 256 the bias fit takes first" in err and "--bias-samples" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(embedded_checkpoint()), "--readout-delay", "soon", "--out", str(target)])
    assert exc.value.code != 0 and "auto" in capsys.readouterr().err


def test_cli_delay_criterion_is_recorded_and_refused_where_no_delay_is_chosen(capsys, tmp_path):
    """--delay-criterion agreement reaches the choice (recorded in the file and the JSON);
    beside a fixed delay it would do nothing, so it is refused in one line before any work."""
    import json

    from annsnn.artifact import load_snn
    from annsnn.cli.main import main
    from annsnn.zoo import embedded_checkpoint

    target, report = tmp_path / "c.snn.pt", tmp_path / "c.json"
    for fixed in (["--readout-delay", "3"], ["--calibration", "none"], ["--target", "nir"]):
        with pytest.raises(SystemExit) as exc:
            latency = [] if fixed == ["--calibration", "none"] else ["--T", "4"]  # --calibration none fits no latency: --T is refused there
            main(["convert", str(embedded_checkpoint()), *latency, "--delay-criterion", "agreement", *fixed, "--out", str(target)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and not target.exists(), fixed
        assert "--delay-criterion" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (fixed, err)
    for criterion in ("agreement", "output-mse"):
        main(["convert", str(embedded_checkpoint()), "--T", "4", "--calib-samples", "384", "--bias-samples", "128", "--delay-criterion", criterion,
              "--out", str(target), "--json", str(report)])
        capsys.readouterr()
        choice = load_snn(target).record.calibration.delay_choice
        assert choice["criterion"] == criterion and choice["samples"] == 256
        pick = (max(range(4), key=lambda k: (choice["agreement"][k], -choice["output_mse"][k], -k)) if criterion == "agreement"
                else min(range(4), key=lambda k: (choice["output_mse"][k], k)))
        assert choice["delay"] == pick
        assert json.loads(report.read_text())["delay_choice"]["criterion"] == criterion


def test_readout_delay_round_trips_and_the_attack_twin_reads_the_same_steps(cnn_and_data, tmp_path):
    """Saved and loaded, the SNN keeps its delay; the differentiable twin used by gradient
    attacks runs the calibrated per-step bias and divides the same readout by T - d."""
    from annsnn.robustness import SurrogateSNN

    model, calib, held = cnn_and_data
    snn = _pipeline(model, calib, 8, readout_delay=3)
    path = tmp_path / "r.snn.pt"
    save_snn(snn, path)
    back = load_snn(path)
    assert back.meta["readout_delay"] == 3
    x = held[:32]
    assert torch.equal(simulate(back, x, 8).outputs[8], simulate(snn, x, 8).outputs[8])
    with torch.no_grad():
        twin = SurrogateSNN(snn, 8)(x) * (8 - 3)
    torch.testing.assert_close(twin, simulate(snn, x, 8).outputs[8], rtol=0, atol=1e-4)


def test_attack_twin_runs_the_calibrated_step_bias(cnn_and_data):
    """Gradient attacks on a calibrated SNN must attack that SNN: the twin's forward (delay 0)
    equals the simulated readout / T. The twin once dropped the per-step bias."""
    from annsnn.robustness import SurrogateSNN

    model, calib, held = cnn_and_data
    snn = _pipeline(model, calib, 6, readout_delay=0)
    assert all(m.step_bias is not None for m in snn.neuron_layers().values())
    x = held[:64]
    with torch.no_grad():
        twin = SurrogateSNN(snn, 6)(x) * 6
    reference = simulate(snn, x, 6).outputs[6]
    torch.testing.assert_close(twin, reference, rtol=0, atol=1e-4)


class _FunctionalStem(torch.nn.Module):
    """conv -> F.relu -> conv -> ReLU -> linear on 1x8x8: the first activation is functional,
    as in a CIFAR ResNet's stem (``F.relu(self.bn1(self.conv1(x)))``). Canonicalization gives
    it a module, registered after every module the model declared, so ``named_modules``
    lists the first neuron layer last."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.early = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.late = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.late_relu = torch.nn.ReLU()
        self.head = torch.nn.Linear(256, 10)

    def forward(self, x):
        return self.head(self.late_relu(self.late(torch.nn.functional.relu(self.early(x)))).flatten(1))


def _functional_stem_snn(options):
    calib = torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return ann_to_snn(_FunctionalStem().eval(), [calib], input_shape=(1, 8, 8), options=options)[0], calib


def test_neuron_layers_are_listed_in_execution_order_not_registration_order():
    options = ConversionOptions.plain(mode=parse_mode("99.99"), channel_wise=True, v_init=0.5, T=6, threshold="if-search")
    snn, _ = _functional_stem_snn(options)
    names = list(snn.neuron_layers())
    assert len(names) == 2 and names[1].endswith("late_relu"), names
    assert list(snn.spike_sources()) == names


def test_layer_bias_fit_fits_the_first_layer_first():
    """Li et al.'s light calibration fits each layer after every layer upstream of it. The
    stem's bias must be fitted before the layer it feeds (exact closed form below, as in
    :func:`test_layer_bias_is_fitted_layer_by_layer_from_the_input`): the second layer's
    bias is the correction for the stem WITH its fitted bias. Before the fix the stem,
    registered last, was fitted last, and the second layer's bias corrected an uncorrected
    stem."""
    T = 4
    options = ConversionOptions.calibrated("threshold+bias", T, mode=parse_mode("99.99"))
    options = dataclasses.replace(options, readout_delay=0)
    snn, calib = _functional_stem_snn(options)
    images = calib[: options.bias_samples]
    neurons = snn.neuron_layers()
    stem = next(name for name in neurons if not name.endswith("late_relu"))
    late = next(name for name in neurons if name.endswith("late_relu"))
    assert float(neurons[stem].step_bias.abs().max()) > 0.01  # the stem's bias matters
    fitted_late = neurons[late].step_bias.clone()
    neurons[late].set_step_bias(None)
    counts: dict = {}
    handles = _counts_hooks({late: neurons[late]}, counts)
    simulate(snn, images, T)
    for h in handles:
        h.remove()
    target, active, shape = ann_channel_targets(snn, images)[late]
    rate = counts[late] / (T * int(np.prod(shape[1:])) * images.shape[0])
    expected = ((target.clamp(max=1.0) - rate) / active.clamp(min=0.05)).clamp(-1.0, 1.0)
    assert torch.allclose(fitted_late.double().reshape(-1), expected, atol=1e-5)


def test_layer_bias_fit_computes_each_layer_input_twice_not_once_per_layer(cnn_and_data):
    """The layer-by-layer fit is one layer-major run: the last layer's synapse runs for
    2 x N steps over the bias images (the bias-free measuring pass, then the run with the
    bias). Before, the fit simulated the whole network once per layer and once more at the
    end (layers + 1 runs of N steps), so it ran (layers + 1) x N x images."""
    from annsnn.calibration import fit_layer_bias

    model, calib, _ = cnn_and_data
    T = 6
    options = ConversionOptions.plain(mode=parse_mode("99.99"), channel_wise=True, v_init=0.5, T=T, threshold="if-search")
    snn = ann_to_snn(model, [calib], input_shape=tuple(calib.shape[1:]), options=options)[0]
    images = calib[:96]
    last = [m for m in snn.graph.modules() if isinstance(m, torch.nn.Linear)][-2]  # the synapse of the last IF layer
    seen = []
    handle = last.register_forward_hook(lambda mod, args, out: seen.append(int(args[0].shape[0])))
    try:
        fit_layer_bias(snn, images, T)
    finally:
        handle.remove()
    assert len(snn.neuron_layers()) >= 3
    assert sum(seen) == 2 * T * images.shape[0], seen
