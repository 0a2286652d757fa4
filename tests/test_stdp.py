"""Unsupervised STDP (Diehl & Cook 2015 style, annsnn.zoo.stdp): the rule against a closed
form and against SpikingJelly's STDPLearner, the neuron against hand-computed traces,
label assignment on a hand-made response matrix, seeded determinism, the checkpoint
(weights only) and counting of its real spikes."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from annsnn.errors import UsageError
from annsnn.foreign_snn import network_from_stdp
from annsnn.zoo.stdp import (
    ExcState,
    StdpConfig,
    assign_labels,
    excitatory_steps,
    normalize_weights,
    predict,
    readout_matrix,
    stdp_checkpoint,
    stdp_delta,
    train_stdp,
)


def _seq(*values):
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1)  # [T, B=1, 1]


def test_two_neuron_weight_update_matches_closed_form():
    # pre spikes at t=0 and t=4, post at t=2; traces x[t] = x[t-1](1-1/tau) + s[t]
    tau_pre, tau_post, nu_pre, nu_post = 4.0, 5.0, 0.1, 0.3
    pre = _seq(1, 0, 0, 0, 1, 0)
    post = _seq(0, 0, 1, 0, 0, 0)
    a, b = 1 - 1 / tau_pre, 1 - 1 / tau_post
    # potentiation at t=2: x_pre(2) = a^2; depression at t=4: x_post(4) = b^2 (at t=0, x_post = 0)
    expected = nu_post * a**2 - nu_pre * b**2
    delta = stdp_delta(pre, post, tau_pre, tau_post, nu_pre, nu_post)
    assert delta.shape == (1, 1)
    assert float(delta) == pytest.approx(expected, rel=1e-6)


def test_simultaneous_spikes_count_both_ways():
    # SpikingJelly's convention: a trace includes the spike of its own step
    delta = stdp_delta(_seq(1), _seq(1), 2.0, 2.0, 0.25, 0.5)
    assert float(delta) == pytest.approx(0.5 - 0.25)


def test_batched_rule_equals_spikingjelly_stdp_learner():
    from spikingjelly.activation_based import learning

    gen = torch.Generator().manual_seed(3)
    T, B, n_in, n_out = 12, 3, 7, 5
    pre = (torch.rand(T, B, n_in, generator=gen) < 0.3).float()
    post = (torch.rand(T, B, n_out, generator=gen) < 0.2).float()
    synapse = nn.Linear(n_in, n_out, bias=False)
    passthrough = nn.Identity()
    learner = learning.STDPLearner("m", synapse, passthrough, tau_pre=3.0, tau_post=6.0, f_pre=lambda w: 0.01, f_post=lambda w: 0.02)
    synapse(pre)
    passthrough(post)
    reference = learner.step(on_grad=False)
    learner.close()
    ours = stdp_delta(pre, post, 3.0, 6.0, 0.01, 0.02)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)


def test_excitatory_neuron_closed_form():
    # one neuron, no leak, constant input 4, threshold 10 + theta 1: fires when v > 11,
    # i.e. at step 2 (v = 12); reset to 5, refractory 2 steps (steps 3, 4 ignore input),
    # then v = 9, 13 -> fires at step 6.
    params = {"decay": 1.0, "threshold": 10.0, "reset": 5.0, "refractory": 2, "inhibition": 0.0}
    current = torch.full((8, 1, 1), 4.0)
    spikes, dtheta = excitatory_steps(current, torch.tensor([1.0]), params, ExcState.zeros(1, 1), theta_plus=0.5)
    assert spikes.flatten().tolist() == [0, 0, 1, 0, 0, 0, 1, 0]
    assert float(dtheta) == 1.0


def test_lateral_inhibition_and_leak():
    params = {"decay": 0.5, "threshold": 1.0, "reset": 0.0, "refractory": 0, "inhibition": 3.0}
    # neuron 0 fires at step 0; at step 1 neuron 1 gets 0.5*0.8 + 1.0 - 3 (inhibited)
    current = torch.tensor([[[2.0, 0.8]], [[0.0, 1.0]]])
    state = ExcState.zeros(1, 2)
    spikes, _ = excitatory_steps(current, torch.zeros(2), params, state)
    assert spikes[:, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert state.v.tolist() == [[0.0, pytest.approx(0.5 * 0.8 + 1.0 - 3.0)]]


def test_label_assignment_on_hand_made_responses():
    counts = torch.tensor([
        [5.0, 0.0, 1.0, 0.0],  # class 0
        [3.0, 0.0, 1.0, 0.0],  # class 0
        [0.0, 2.0, 1.0, 0.0],  # class 1
        [4.0, 0.0, 0.0, 0.0],  # class 2
    ])
    labels = torch.tensor([0, 0, 1, 2])
    # neuron 0: means (4, 0, 4) -> tie, lowest class 0; neuron 1: (0, 2, 0) -> 1;
    # neuron 2: (1, 1, 0) -> 0; neuron 3: silent -> 0
    assert assign_labels(counts, labels, 3).tolist() == [0, 1, 0, 0]
    labels = torch.tensor([2, 2, 1, 0])
    # neuron 0: (4, 0, 4) -> 0; neuron 2: (0, 1, 1) -> tie, 1
    assert assign_labels(counts, labels, 3).tolist() == [0, 1, 1, 0]
    labels = torch.tensor([1, 1, 0, 0])  # class 2 absent: scores 0
    # neuron 0: (2, 4, 0) -> 1; neuron 1: (1, 0, 0) -> 0; neuron 2: (0.5, 1, 0) -> 1
    assert assign_labels(counts, labels, 3).tolist() == [1, 0, 1, 0]


def test_readout_is_mean_count_of_assigned_neurons():
    assignments = torch.tensor([0, 1, 1, 2])
    R = readout_matrix(assignments, 4)
    assert R.tolist() == [[1, 0, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    counts = torch.tensor([[1.0, 3.0, 3.0, 2.0], [1.0, 0.0, 1.0, 0.0]])
    assert predict(counts, assignments, 4).tolist() == [1, 0]  # means (1, 3, 2) and (1, 0.5, 0)


def test_normalize_weights_rows_sum_to_norm():
    w = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    out = normalize_weights(w, 2.0)
    assert out.tolist() == [[0.5, 1.5], [0.0, 0.0]]


def _tiny(seed: int = 0) -> StdpConfig:
    return StdpConfig(neurons=6, dataset="digits", train_samples=40, assign_samples=40, test_samples=20,
                      batch_size=8, presentation_ms=30.0, rate_hz=200.0, norm=6.4, seed=seed)


def test_training_is_deterministic_with_a_seed():
    a, b, c = train_stdp(_tiny(0)), train_stdp(_tiny(0)), train_stdp(_tiny(1))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.theta, b.theta) and torch.equal(a.assignments, b.assignments)
    assert a.history[0]["test_top1"] == b.history[0]["test_top1"]
    assert not torch.equal(a.weight, c.weight)
    assert float(a.theta.sum()) > 0  # thresholds adapted
    torch.testing.assert_close(a.weight.sum(1), torch.full((6,), 6.4))


def test_bad_parameters_are_refused():
    with pytest.raises(UsageError):
        StdpConfig(dt_ms=10.0, rate_hz=200.0)  # two spikes per step
    with pytest.raises(UsageError):
        StdpConfig(tau_v_ms=float("nan"))


def test_checkpoint_loads_weights_only_and_counts_real_spikes(tmp_path):
    from annsnn.analyzer import Analyzer

    config = _tiny(0)
    result = train_stdp(config)
    path = tmp_path / "stdp.pt"
    torch.save(stdp_checkpoint(config, result), path)
    payload = torch.load(path, weights_only=True)
    snn = network_from_stdp(payload)
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(4, 1, 8, 8, generator=gen)
    y = torch.tensor([0, 1, 2, 3])
    T = config.steps
    with Analyzer(snn, T=[T], encoding="poisson", seed=11, energy_models=["45nm-fp32"]) as analyzer:
        analyzer.run(x, y)
    res = analyzer.report()
    # the same Poisson draws by hand: the encoder draws rand((T, B, 1, 8, 8)) from the seed
    noise = torch.rand((T, 4, 1, 8, 8), generator=torch.Generator().manual_seed(11 * 1_000_003))
    pre = (noise < x.unsqueeze(0) * config.spike_prob).float().reshape(T, 4, 64)
    current = pre @ result.weight.T
    spikes, _ = excitatory_steps(current, result.theta, config.neuron_params(), ExcState.zeros(4, 6))
    n_in, n_exc = float(pre.sum()), float(spikes.sum())
    # SyOPs: input spikes x 6 synapses, excitatory spikes x (10 readout + 5 inhibitory) synapses
    row = res.rows[0]
    assert row.synaptic_acs == pytest.approx((n_in * 6 + n_exc * (10 + 5)) / 4)
    pred = predict(spikes.sum(0), result.assignments, 10)
    assert row.top1 == pytest.approx(float((pred == y).float().mean()))


def test_cli_trains_saves_and_counts(tmp_path, monkeypatch):
    import json

    from annsnn.cli.main import main

    monkeypatch.chdir(tmp_path)

    def code(*args):
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        return exc.value.code

    small = ["--data", "digits", "--neurons", "6", "--samples", "40", "--assign-samples", "40", "--test-samples", "20", "--T", "10"]
    main(["zoo", "train", "stdp_mnist", "--snn", "--rule", "stdp", *small, "--out", "s.pt"])
    payload = torch.load(tmp_path / "s.pt", weights_only=True)
    assert payload["format"] == "annsnn-stdp-snn" and payload["T"] == 10 and payload["weight"].shape == (6, 64)
    assert payload["history"][0]["train_images"] == 40
    main(["energy", "--model", "s.pt", "--encoding", "poisson", "--T", "5,10", "--samples", "20", "--json", "e.json"])
    report = json.loads((tmp_path / "e.json").read_text())
    assert [r["T"] for r in report["rows"]] == [5, 10] and all(r["macs"] == 0 for r in report["rows"])
    assert code("energy", "--model", "s.pt", "--T", "10") == 2  # direct input refused: it is driven by Poisson spikes
    assert code("zoo", "train", "stdp_mnist", "--rule", "stdp", *small) == 2  # --snn missing
    assert code("zoo", "train", "lenet5", "--snn", "--rule", "stdp", *small) == 2  # not the STDP network
    assert not (tmp_path / "lenet5-digits-stdp6.pt").exists()


@pytest.mark.parametrize("damage", ["theta_nan", "threshold_inf", "refractory_negative", "inhibition_negative", "decay_above_1", "input_shape_mismatch", "input_shape_text"])
def test_a_damaged_checkpoint_is_refused_not_scored_zero(damage):
    """NaN theta scored 0.00 % with exit 0, a negative refractory period silently turned
    refractoriness off, and an input_shape that disagrees with the weight was an internal
    error: each is now 'damaged STDP checkpoint'."""
    config = _tiny(0)
    payload = stdp_checkpoint(config, train_stdp(config))
    network_from_stdp(payload)  # the undamaged one loads
    neuron = dict(payload["neuron"])
    if damage == "theta_nan":
        payload["theta"] = payload["theta"] * float("nan")
    elif damage == "threshold_inf":
        neuron["threshold"] = float("inf")
    elif damage == "refractory_negative":
        neuron["refractory"] = -3
    elif damage == "inhibition_negative":
        neuron["inhibition"] = -1.0
    elif damage == "decay_above_1":
        neuron["decay"] = 1.5
    elif damage == "input_shape_mismatch":
        payload["input_shape"] = [3, 32, 32]
    else:
        payload["input_shape"] = ["a", 8, 8]
    payload["neuron"] = neuron
    with pytest.raises(UsageError, match="damaged STDP checkpoint"):
        network_from_stdp(payload)


def test_a_truncated_checkpoint_is_called_corrupt_never_a_pickle_to_trust(tmp_path):
    """A cut-off checkpoint was reported as 'a pickled module ... pass --trust', which asks
    the user to let a merely corrupt file run code."""
    from annsnn.foreign_snn_files import load_foreign

    config = _tiny(0)
    whole = tmp_path / "s.pt"
    torch.save(stdp_checkpoint(config, train_stdp(config)), whole)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[:3000])
    for trust in (False, True):
        with pytest.raises(UsageError, match="corrupt, truncated") as caught:
            load_foreign(str(cut), trust=trust)
        assert "--trust" not in str(caught.value)
