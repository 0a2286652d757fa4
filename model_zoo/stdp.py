"""Unsupervised STDP on MNIST in the style of Diehl & Cook 2015 ("Unsupervised learning
of digit recognition using spike-timing-dependent plasticity", Front. Comput. Neurosci.
9:99, doi:10.3389/fncom.2015.00099).

**Network.** Poisson input (pixel ``x`` in [0, 1] spikes with probability ``rate * x`` per
step) -> all-to-all plastic synapses ``W`` (``[N, 784]``, in ``[0, w_max]``) -> ``N``
excitatory leaky integrate-and-fire neurons with adaptive thresholds and lateral
inhibition. Potentials are relative to rest (-65 mV), so D&C's values become: threshold
13 mV (-52), reset 5 mV (-60). Per step ``t`` (the order of BindsNET's
``DiehlAndCookNodes``, Hazan et al. 2018)::

    v    <- v * (1 - 1/tau_v)                                          (leak to rest)
    I[t] =  W s_in[t]  -  inhibition * (sum_k s[t-1, k] - s[t-1, j])  (lateral inhibition)
    v    <- v + I[t]              for neurons that are not refractory
    s[t] =  1[v > threshold + theta]
    v    <- reset where s[t];  refractory for ``refractory`` steps
    theta <- theta + theta_plus * s[t]                                  (training only)

D&C's separate inhibitory population (one per excitatory neuron, firing one step after it
and inhibiting all others) is folded into the direct inhibition term above, as in
BindsNET's ``DiehlAndCook2015v2``. ``theta`` is frozen after training.

**Learning rule.** Pair-based STDP with additive traces, exactly SpikingJelly 2.0's
``stdp_linear_step`` (``spikingjelly.activation_based.learning.STDPLearner``) with
constant ``f_pre = nu_pre``, ``f_post = nu_post``::

    x_pre[t]  = x_pre[t-1]  (1 - 1/tau_pre)  + s_in[t]
    x_post[t] = x_post[t-1] (1 - 1/tau_post) + s[t]
    dW = nu_post * sum_{t,b} s[t,b]^T x_pre[t,b]  -  nu_pre * sum_{t,b} x_post[t,b]^T s_in[t,b]

summed over the T presentation steps and the B images of a batch, at the weights fixed
for the presentation (SpikingJelly's multi-step ``STDPLearner`` makes the same
approximation; Saunders et al. 2019, arXiv:1909.02549, study minibatch STDP). After each
batch ``W`` is clipped to ``[0, w_max]`` and each neuron's incoming weights are scaled to
sum to ``norm`` (D&C: 78.4). ``STDPLearner`` materializes a ``[B, N, 784]`` product per
step; the trainer computes the same sums as two matrix products over all ``T*B`` steps
(a test checks both against each other and against a closed form).

**Labels.** After training, with learning off, every neuron is assigned the class for
which its mean spike count over training images is highest (:func:`assign_labels`). A
test image is classified by the class whose assigned neurons fire most on average
(:func:`predict`), which is a linear readout of the spike counts (:func:`readout_matrix`).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from annsnn.errors import UsageError
from annsnn.layers import IFNeurons, InputEncoder

__all__ = [
    "STDP_FORMAT",
    "StdpConfig",
    "StdpEvent",
    "StdpResult",
    "ExcState",
    "excitatory_steps",
    "stdp_delta",
    "normalize_weights",
    "assign_labels",
    "readout_matrix",
    "predict",
    "responses",
    "train_stdp",
    "stdp_checkpoint",
    "load_stdp_checkpoint",
    "DiehlCookNeurons",
    "RateEncoder",
]

STDP_FORMAT = "annsnn-stdp-snn"


@dataclass(frozen=True)
class StdpConfig:
    """Diehl & Cook 2015 parameters in ms (BindsNET's values); the simulation steps by ``dt_ms``."""

    neurons: int = 400
    dataset: str = "mnist"
    epochs: int = 1
    train_samples: int | None = 20000  # first N shuffled training images per epoch (None: all); chosen on training images: 80.1% (20,000) vs 73.6% (60,000), benchmarks/stdp_validate.py
    assign_samples: int = 10000  # training images (learning off) for the label assignment
    test_samples: int | None = None  # evenly spaced test images scored after each epoch (None: all)
    batch_size: int = 64  # images presented at once (measured: 8,000 images, 400 neurons: 76.1% at 64, 75.1% at 32)
    presentation_ms: float = 250.0
    dt_ms: float = 2.0  # measured: 8,000 images, 400 neurons: 75.1% at 2 ms, 69.4% at 1 ms (twice the cost), 72.5% at 3 ms
    rate_hz: float = 63.75  # input rate of a white pixel: D&C's pixel/4 Hz (measured, 16,000 images: 82.4% at 64 Hz, 77.5% at BindsNET's 128 Hz)
    tau_v_ms: float = 100.0
    tau_pre_ms: float = 20.0
    tau_post_ms: float = 20.0
    refractory_ms: float = 5.0
    threshold: float = 13.0  # mV above rest
    reset: float = 5.0
    theta_plus: float = 0.05
    inhibition: float = 17.5
    nu_pre: float = 1e-4
    nu_post: float = 1e-2
    w_max: float = 1.0
    norm: float = 78.4
    w_init: float = 0.3  # initial weights uniform in [0, w_init)
    seed: int = 0
    data_root: str | None = None
    download: bool = False

    def __post_init__(self) -> None:
        for name in ("presentation_ms", "dt_ms", "rate_hz", "tau_v_ms", "tau_pre_ms", "tau_post_ms", "threshold", "norm", "w_max", "w_init"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"STDP parameter {name} must be finite and positive, got {value!r}")
        for name in ("refractory_ms", "theta_plus", "inhibition", "nu_pre", "nu_post", "reset"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"STDP parameter {name} must be finite and >= 0, got {value!r}")
        if self.neurons < 1 or self.epochs < 1 or self.batch_size < 1 or self.assign_samples < 1:
            raise UsageError("--neurons, --epochs, --batch-size and --assign-samples must be at least 1")
        if self.rate_hz * self.dt_ms / 1000.0 > 1.0:
            raise UsageError(f"rate {self.rate_hz:g} Hz at dt {self.dt_ms:g} ms is more than one spike per step")
        for name in ("tau_v_ms", "tau_pre_ms", "tau_post_ms"):
            if getattr(self, name) < self.dt_ms:
                raise UsageError(f"{name} is shorter than one step (dt {self.dt_ms:g} ms)")

    @property
    def steps(self) -> int:
        return max(1, round(self.presentation_ms / self.dt_ms))

    @property
    def spike_prob(self) -> float:
        """Spike probability per step of a white pixel."""
        return self.rate_hz * self.dt_ms / 1000.0

    def neuron_params(self) -> dict:
        """The excitatory neuron in step units (what :func:`excitatory_steps` reads)."""
        return {
            "decay": 1.0 - self.dt_ms / self.tau_v_ms,
            "threshold": self.threshold,
            "reset": self.reset,
            "refractory": int(round(self.refractory_ms / self.dt_ms)),
            "inhibition": self.inhibition,
        }


@dataclass(frozen=True)
class StdpEvent:
    """Progress: one per training batch (``epoch_done`` False) and one per finished epoch."""

    epoch: int
    images: int  # images seen in this epoch
    total_images: int  # per epoch
    spikes_per_image: float  # mean excitatory spikes per image in this epoch so far
    test_top1: float | None = None
    epoch_done: bool = False
    epoch_time_s: float | None = None


@dataclass
class StdpResult:
    weight: Tensor  # [N, 784]
    theta: Tensor  # [N]
    assignments: Tensor  # [N] int64
    history: list[dict] = field(default_factory=list)
    test_top1: float = 0.0
    train_time_s: float = 0.0  # learning only (all epochs), wall
    train_cpu_s: float = 0.0  # process CPU time of the same
    train_images: int = 0  # images presented with learning on (all epochs)


@dataclass
class ExcState:
    """State of the excitatory layer across chunks of steps (``[B, N]`` each)."""

    v: Tensor
    refractory: Tensor
    last: Tensor  # spikes of the previous step

    @staticmethod
    def zeros(batch: int, neurons: int, device=None) -> "ExcState":
        z = torch.zeros(batch, neurons, device=device)
        return ExcState(z.clone(), z.clone(), z.clone())


def excitatory_steps(current: Tensor, theta: Tensor, params: dict, state: ExcState, *, theta_plus: float = 0.0) -> tuple[Tensor, Tensor]:
    """Run the excitatory layer over ``current`` ``[T, B, N]`` (synaptic input per step).

    Returns spikes ``[T, B, N]`` and the per-image threshold increments ``[B, N]``
    (``theta_plus`` times its spikes; 0 when ``theta_plus`` is 0). ``state`` is updated
    in place, so a presentation may be split into chunks (see the module docstring).
    """
    decay, thr, reset, refr, inh = params["decay"], params["threshold"], params["reset"], params["refractory"], params["inhibition"]
    steps = current.shape[0]
    spikes = torch.empty_like(current)
    dtheta = torch.zeros_like(state.v)
    v, rc, last = state.v, state.refractory, state.last
    base = thr + theta
    for t in range(steps):
        v = v * decay
        drive = current[t]
        if inh:
            drive = drive - inh * (last.sum(1, keepdim=True) - last)
        v = torch.where(rc > 0, v, v + drive)
        s = (v > base + dtheta).to(current.dtype)
        spikes[t] = s
        v = torch.where(s > 0, torch.full_like(v, reset), v)
        rc = torch.where(s > 0, torch.full_like(rc, float(refr)), rc - 1)
        if theta_plus:
            dtheta = dtheta + theta_plus * s
        last = s
    state.v, state.refractory, state.last = v, rc, last
    return spikes, dtheta


def _traces(spikes: Tensor, tau: float) -> Tensor:
    """``x[t] = x[t-1] (1 - 1/tau) + s[t]`` from x[-1] = 0, over dim 0 (SpikingJelly's trace)."""
    decay = 1.0 - 1.0 / tau
    out = torch.empty_like(spikes)
    x = torch.zeros_like(spikes[0])
    for t in range(spikes.shape[0]):
        x = x * decay + spikes[t]
        out[t] = x
    return out


def stdp_delta(pre: Tensor, post: Tensor, tau_pre: float, tau_post: float, nu_pre: float, nu_post: float) -> Tensor:
    """The weight change ``[N_post, N_pre]`` of a presentation: ``pre`` ``[T, B, N_pre]`` and
    ``post`` ``[T, B, N_post]`` spikes, weights fixed (see the module docstring)::

        dW = nu_post * sum_{t,b} post[t,b]^T x_pre[t,b] - nu_pre * sum_{t,b} x_post[t,b]^T pre[t,b]

    Equal to summing SpikingJelly's ``stdp_linear_step`` over t with ``f_pre = nu_pre``,
    ``f_post = nu_post``. Only the steps with a post spike enter the first product.
    """
    n_pre, n_post = pre.shape[-1], post.shape[-1]
    pre_flat = pre.reshape(-1, n_pre)
    post_flat = post.reshape(-1, n_post)
    delta = torch.zeros(n_post, n_pre, dtype=pre.dtype, device=pre.device)
    rows = post_flat.sum(1).nonzero().flatten()
    if rows.numel():
        x_pre = _traces(pre, tau_pre).reshape(-1, n_pre)
        delta += nu_post * (post_flat[rows].T @ x_pre[rows])
        if nu_pre:
            x_post = _traces(post, tau_post).reshape(-1, n_post)
            delta -= nu_pre * (x_post.T @ pre_flat)
    return delta


def normalize_weights(weight: Tensor, norm: float) -> Tensor:
    """Each row (a neuron's incoming weights) scaled to sum to ``norm`` (D&C's normalization)."""
    sums = weight.sum(1, keepdim=True)
    return torch.where(sums > 0, weight * (norm / sums.clamp_min(1e-30)), weight)


def assign_labels(counts: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Each neuron's class: the class with the highest mean spike count per image.

    ``counts`` ``[S, N]`` spikes per image and neuron; ``labels`` ``[S]``. The mean of
    class ``c`` is ``sum_{s: y_s = c} counts[s] / |{s: y_s = c}|`` (classes absent from
    ``labels`` score 0). Ties go to the lowest class index (also for silent neurons).
    """
    if counts.dim() != 2 or labels.shape != counts.shape[:1]:
        raise UsageError("assign_labels needs counts [S, N] and labels [S]")
    onehot = torch.nn.functional.one_hot(labels.long(), num_classes).to(torch.float64)  # [S, C]
    totals = onehot.T @ counts.to(torch.float64)  # [C, N]
    per_class = onehot.sum(0).clamp_min(1).unsqueeze(1)
    return (totals / per_class).argmax(0)


def readout_matrix(assignments: Tensor, num_classes: int) -> Tensor:
    """``R[c, j] = 1/n_c`` if neuron j is assigned class c (``n_c`` neurons), else 0: class
    scores ``R @ counts`` are the mean counts of each class's neurons (0 for a class with none)."""
    onehot = torch.nn.functional.one_hot(assignments.long(), num_classes).T.to(torch.float32)  # [C, N]
    return onehot / onehot.sum(1, keepdim=True).clamp_min(1)


def predict(counts: Tensor, assignments: Tensor, num_classes: int) -> Tensor:
    """Predicted classes ``[S]`` from spike counts ``[S, N]`` (D&C's "all" vote)."""
    return (counts.to(torch.float32) @ readout_matrix(assignments, num_classes).T).argmax(1)


def _images(dataset, indices: list[int]) -> tuple[Tensor, Tensor]:
    xs, ys = zip(*(dataset[i] for i in indices))
    return torch.stack([torch.as_tensor(x) for x in xs]).reshape(len(xs), -1).float(), torch.as_tensor(ys)


def _present(weight: Tensor, theta: Tensor, x: Tensor, config: StdpConfig, generator: torch.Generator, *, learn: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One presentation of images ``x`` ``[B, 784]``: returns spikes ``[T, B, N]``, the
    input spikes ``[T, B, C]`` of the C pixels that are non-zero in some image of the batch,
    their indices ``[C]`` and the summed threshold increments ``[N]``. Pixels that are 0 in
    every image never spike, so leaving them out changes no current and no weight change."""
    steps = config.steps
    cols = (x > 0).any(0).nonzero().flatten()
    xs = x[:, cols]
    noise = torch.rand((steps, *xs.shape), generator=generator)
    pre = (noise < xs.unsqueeze(0) * config.spike_prob).to(torch.float32)
    current = (pre.reshape(-1, xs.shape[1]) @ weight[:, cols].T).reshape(steps, x.shape[0], -1)
    state = ExcState.zeros(x.shape[0], weight.shape[0])
    spikes, dtheta = excitatory_steps(current, theta, config.neuron_params(), state, theta_plus=config.theta_plus if learn else 0.0)
    return spikes, pre, cols, dtheta.sum(0)


def responses(weight: Tensor, theta: Tensor, images: Tensor, config: StdpConfig, generator: torch.Generator, batch_size: int = 100) -> Tensor:
    """Spike counts ``[S, N]`` of ``images`` ``[S, 784]`` with learning off."""
    out = []
    for start in range(0, images.shape[0], batch_size):
        spikes, _, _, _ = _present(weight, theta, images[start : start + batch_size], config, generator, learn=False)
        out.append(spikes.sum(0))
    return torch.cat(out) if out else torch.zeros(0, weight.shape[0])


def _even(n_total: int, n: int | None) -> list[int]:
    if n is None or n >= n_total:
        return list(range(n_total))
    return [int(i * n_total / n) for i in range(n)]


def train_stdp(config: StdpConfig, on_event: Callable[[StdpEvent], None] | None = None) -> StdpResult:
    """Train the network of the module docstring; seeded (same seed, same weights)."""
    from annsnn.data import dataset_spec, load_dataset

    spec = dataset_spec(config.dataset, config.data_root)
    n_in = int(math.prod(spec.input_shape))
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    train_set = load_dataset(config.dataset, "train", config.data_root, config.download)
    test_set = load_dataset(config.dataset, "test", config.data_root, config.download)
    _check_range(train_set)
    gen = torch.Generator().manual_seed(config.seed)
    weight = normalize_weights(torch.rand(config.neurons, n_in, generator=gen) * config.w_init, config.norm)
    theta = torch.zeros(config.neurons)
    n_train = len(train_set) if config.train_samples is None else min(config.train_samples, len(train_set))
    test_idx = _even(len(test_set), config.test_samples)
    test_x, test_y = _images(test_set, test_idx)
    result = StdpResult(weight, theta, torch.zeros(config.neurons, dtype=torch.long))
    for epoch in range(config.epochs):
        order = torch.randperm(len(train_set), generator=gen)[:n_train].tolist()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        spikes_total = 0.0
        for start in range(0, n_train, config.batch_size):
            x, _ = _images(train_set, order[start : start + config.batch_size])
            spikes, pre, cols, dtheta = _present(weight, theta, x, config, gen, learn=True)
            weight[:, cols] += stdp_delta(pre, spikes, config.tau_pre_ms / config.dt_ms, config.tau_post_ms / config.dt_ms, config.nu_pre, config.nu_post)
            weight = normalize_weights(weight.clamp_(0.0, config.w_max), config.norm)
            theta += dtheta
            spikes_total += float(spikes.sum())
            seen = min(start + config.batch_size, n_train)
            if on_event is not None:
                on_event(StdpEvent(epoch + 1, seen, n_train, spikes_total / seen))
        epoch_wall, epoch_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        result.train_time_s += epoch_wall
        result.train_cpu_s += epoch_cpu
        result.train_images += n_train
        assign_idx = order[: config.assign_samples] if config.assign_samples <= n_train else torch.randperm(len(train_set), generator=gen)[: config.assign_samples].tolist()
        ax, ay = _images(train_set, assign_idx)
        assignments = assign_labels(responses(weight, theta, ax, config, gen), ay, spec.num_classes)
        test_counts = responses(weight, theta, test_x, config, gen)
        top1 = float((predict(test_counts, assignments, spec.num_classes) == test_y).float().mean())
        result.history.append({"epoch": epoch + 1, "train_images": n_train, "test_top1": top1, "test_images": len(test_idx),
                               "epoch_time_s": epoch_wall, "epoch_cpu_s": epoch_cpu, "spikes_per_image": spikes_total / n_train,
                               "silent_test_images": int((test_counts.sum(1) == 0).sum())})
        result.assignments = assignments
        if on_event is not None:
            on_event(StdpEvent(epoch + 1, n_train, n_train, spikes_total / n_train, top1, True, epoch_wall))
    result.weight, result.theta = weight, theta
    result.test_top1 = result.history[-1]["test_top1"]
    return result


def _check_range(dataset) -> None:
    x = torch.as_tensor(dataset[0][0])
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise UsageError("STDP needs images in [0, 1] (pixel = spike rate)")


def stdp_checkpoint(config: StdpConfig, result: StdpResult) -> dict:
    """A weights-only checkpoint (tensors and JSON-able values; ``torch.load(weights_only=True)``)."""
    from annsnn.data import dataset_spec

    spec = dataset_spec(config.dataset, config.data_root)
    return {
        "format": STDP_FORMAT,
        "version": 1,
        "weight": result.weight.detach().clone(),
        "theta": result.theta.detach().clone(),
        "assignments": result.assignments.detach().clone(),
        "num_classes": spec.num_classes,
        "input_shape": list(spec.input_shape),
        "dataset": config.dataset,
        "T": config.steps,
        "spike_prob": config.spike_prob,
        "neuron": config.neuron_params(),
        "test_top1": result.test_top1,
        "train_time_s": result.train_time_s,
        "train_cpu_s": result.train_cpu_s,
        "train_images": result.train_images,
        "history": result.history,
        "config": {k: v for k, v in asdict(config).items() if k != "data_root"},
    }


def load_stdp_checkpoint(payload: dict) -> tuple[Tensor, Tensor, Tensor, dict, float, int, tuple[int, ...]]:
    """``(weight, theta, assignments, neuron params, spike probability, classes, input shape)``
    of a checkpoint, checked (the input shape must give the synapse's inputs)."""
    try:
        weight = payload["weight"].to(torch.float32)
        theta = payload["theta"].to(torch.float32)
        assignments = payload["assignments"].long()
        params = {k: float(payload["neuron"][k]) for k in ("decay", "threshold", "reset", "inhibition")}
        params["refractory"] = int(payload["neuron"]["refractory"])
        prob = float(payload["spike_prob"])
        classes = int(payload["num_classes"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise UsageError(f"damaged STDP checkpoint ({type(exc).__name__})") from None
    n = weight.shape[0]
    if weight.dim() != 2 or theta.shape != (n,) or assignments.shape != (n,) or not (0 < prob <= 1) or not bool(torch.isfinite(weight).all()):
        raise UsageError("damaged STDP checkpoint (shapes or values)")
    if int(assignments.min()) < 0 or int(assignments.max()) >= classes:
        raise UsageError("damaged STDP checkpoint (assignments out of range)")
    if not bool(torch.isfinite(theta).all()):
        raise UsageError("damaged STDP checkpoint (theta not finite)")
    bounds = {"decay": (-math.inf, 1.0), "threshold": (0.0, math.inf), "reset": (0.0, math.inf), "inhibition": (0.0, math.inf)}  # as StdpConfig makes them
    for name, (low, high) in bounds.items():
        value = params[name]
        if not (math.isfinite(value) and low <= value <= high and (name != "threshold" or value > 0)):
            raise UsageError(f"damaged STDP checkpoint (neuron {name} {value!r})")
    if params["refractory"] < 0:
        raise UsageError(f"damaged STDP checkpoint (neuron refractory {params['refractory']} steps)")
    try:
        shape = tuple(int(s) for s in payload.get("input_shape", [1, 28, 28]))
    except (TypeError, ValueError):
        raise UsageError("damaged STDP checkpoint (input_shape is not a list of sizes)") from None
    if not shape or min(shape) < 1 or math.prod(shape) != weight.shape[1]:
        raise UsageError(f"damaged STDP checkpoint (input_shape {list(shape)} does not give the synapse's {weight.shape[1]} inputs)")
    return weight, theta, assignments, params, prob, classes, shape


# ---------------------------------------------------------------------------
# annsnn's form, for counting: encoder -> Linear -> DiehlCookNeurons -> Linear readout


class DiehlCookNeurons(IFNeurons):
    """The trained excitatory layer (theta frozen) on merged ``[K*B, N]`` currents; its
    inhibition reaches the N-1 other neurons (:attr:`recurrent_fanout` synapses per spike)."""

    def __init__(self, theta: Tensor, params: dict) -> None:
        super().__init__()
        self.register_buffer("theta", theta.detach().to(torch.float32).clone())
        self.params = dict(params)
        self.state: ExcState | None = None

    def reset_state(self) -> None:
        super().reset_state()
        self.state = None

    @property
    def recurrent_fanout(self) -> int:
        """Inhibitory synapses per spike (to every other neuron; 0 without inhibition)."""
        return self.theta.numel() - 1 if self.params["inhibition"] else 0

    def forward(self, x: Tensor) -> Tensor:
        seq = x.reshape(self.steps, -1, *x.shape[1:]).float()
        if self.state is None:
            self.state = ExcState.zeros(seq.shape[1], seq.shape[2], device=x.device)
        spikes, _ = excitatory_steps(seq, self.theta, self.params, self.state)
        self.t += self.steps
        return spikes.to(x.dtype).reshape(x.shape)

    def config(self) -> dict:
        return {"params": self.params}

    def extra_repr(self) -> str:
        p = self.params
        return f"Diehl&Cook LIF, threshold={p['threshold']:g}+theta, decay={p['decay']:g}, refractory={p['refractory']}, inhibition={p['inhibition']:g}"


class RateEncoder(InputEncoder):
    """Poisson input at ``prob * pixel`` per step (``direct``: ``prob * pixel`` as a current)."""

    def __init__(self, prob: float) -> None:
        super().__init__()
        self.prob = float(prob)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x * self.prob)

    def config(self) -> dict:
        return {"prob": self.prob}
