"""Accuracy of an ANN and its converted SNN under input noise and adversarial attacks.

Every perturbed batch goes, as the same tensor, to the ANN and to the SNN; the SNN is
simulated once for max(T) steps per perturbed batch and read out at every T (prefix
sums, as :func:`annsnn.simulate.simulate` does for ``evaluate``). Images are in [0, 1]
and the normalization is inside the model, which is what attack libraries assume.

Perturbations (strength s):

* ``gaussian``: ``x' = clip(x + s·n, 0, 1)``, n ~ N(0, 1) per pixel, seeded; s ≥ 0.
* ``salt-pepper``: each pixel value is, with probability s, replaced by 0 or 1 (equally
  likely), seeded; s ∈ [0, 1].
* ``fgsm`` (Goodfellow, Shlens & Szegedy, ICLR 2015, arXiv:1412.6572), untargeted,
  white-box: ``x' = clip(x + ε·sign(∇_x CE(f(x), y)), 0, 1)``, ε ∈ [0, 1]. The sign of
  the gradient does not depend on ε, so it is computed once per batch for all ε.
  This hand-written FGSM equals ``torchattacks.FGSM`` (a test checks it).
* ``pgd`` (Madry et al., ICLR 2018, arXiv:1706.06083) through ``torchattacks.PGD``
  (L∞, random start, step α = 2.5·ε/steps by default), seeded.

An attack is crafted either on the ANN (``crafted_on="ann"``: white-box on the ANN, a
*transfer* attack for the SNN) or directly on the SNN (``crafted_on="snn"``: gradients
through the IF dynamics over ``attack_T`` steps by backpropagation through time, with a
surrogate spike gradient, as in spike-based attacks such as Sharmin et al., ECCV 2020,
arXiv:2003.10399). Both networks are scored on every attacked tensor, and each row says
where its attack was crafted.

The SNN used for gradients, :class:`SurrogateSNN`, is a differentiable twin of the
converted graph: the same layers, with each IF layer replaced by
``v ← v + x_t; s_t = H(v − 1); v ← v − s_t`` whose Heaviside step ``H`` has the
derivative of a spikingjelly surrogate (default ``ATan``, Fang et al., ICCV 2021,
arXiv:2007.05785) in the backward pass. Its forward pass is the same IF neuron as
:func:`annsnn.functional.if_soft_reset` (which is in-place and not differentiable).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UsageError
from .layers import IFNeurons, InputEncoder, TemporalModule
from .metrics import ClassificationMetrics, check_label_range, classification_metrics, ranked_classes
from .modes import parse_time_steps
from .simulate import readout_delay_of, readout_start, simulate
from .snn import SpikingNetwork
from .record import reference_ann_note

__all__ = [
    "ATTACKS",
    "run_robustness",
    "NOISES",
    "Condition",
    "RobustnessSpec",
    "RobustnessRow",
    "RobustnessResult",
    "Robustness",
    "SurrogateIF",
    "SurrogateSNN",
    "SURROGATES",
    "fgsm",
    "gaussian_noise",
    "salt_and_pepper",
    "parse_strengths",
]

SCHEMA_VERSION = 1
NOISES = ("gaussian", "salt-pepper")
ATTACKS = ("fgsm", "pgd")
SURROGATES = ("atan", "sigmoid", "erf", "piecewise-quadratic")
CraftedOn = Literal["none", "ann", "snn"]

_DESCRIPTION = {
    "none": "same noisy tensor to ANN and SNN",
    "ann": "crafted on the ANN (white-box); transfer attack on the SNN",
    "snn": "crafted directly on the SNN (surrogate gradient, BPTT); transfer attack on the ANN",
}


MAX_STRENGTHS = 1000  # strengths of one perturbation in one run


def parse_strengths(text: str, what: str) -> tuple[float, ...]:
    """``"0,0.05,0.1"`` or an inclusive range ``"0:1:0.05"`` (start:stop:step) -> sorted floats."""
    values: list[float] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            numbers = [float(v) for v in part.split(":")]
        except ValueError:
            raise UsageError(f"{what}: {part!r} is not a number or a range START:STOP:STEP") from None
        if len(numbers) == 1:
            values.append(numbers[0])
            continue
        if len(numbers) != 3:
            raise UsageError(f"{what}: {part!r} is not a number or a range START:STOP:STEP")
        start, stop, step = numbers
        if not all(math.isfinite(v) for v in (start, stop, step)):
            raise UsageError(f"{what}: strengths must be finite")
        if step <= 0 or stop < start:
            raise UsageError(f"{what}: the range {part!r} needs START <= STOP and STEP > 0")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        if count > MAX_STRENGTHS:  # each strength is a full evaluation: 10^9 of them never ends
            raise UsageError(f"{what}: {part!r} makes {count:,} strengths; at most {MAX_STRENGTHS:,} in one run (use a larger STEP)")
        values.extend(round(start + i * step, 10) for i in range(count))
    if not values:
        raise UsageError(f"{what}: give at least one strength")
    if any(not math.isfinite(v) for v in values):
        raise UsageError(f"{what}: strengths must be finite")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class Condition:
    """One perturbation at one strength, and where an attack was crafted."""

    kind: str  # "clean", "gaussian", "salt-pepper", "fgsm", "pgd"
    strength: float
    crafted_on: CraftedOn = "none"

    @property
    def description(self) -> str:
        return "no perturbation" if self.kind == "clean" else _DESCRIPTION[self.crafted_on]


@dataclass(frozen=True)
class RobustnessSpec:
    """What to perturb and how; validated when built (UsageError on bad values)."""

    time_steps: tuple[int, ...]
    gaussian: tuple[float, ...] = ()
    salt_pepper: tuple[float, ...] = ()
    fgsm: tuple[float, ...] = ()
    pgd: tuple[float, ...] = ()
    attack_on: Literal["ann", "snn", "both"] = "ann"
    attack_T: int | None = None  # SNN attacks: steps of BPTT (default max T)
    pgd_steps: int = 10
    pgd_alpha: float | None = None  # default 2.5·ε/steps
    surrogate: str = "atan"
    surrogate_alpha: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_steps", tuple(parse_time_steps(list(self.time_steps))))
        for name, values, high in (("gaussian noise", self.gaussian, None), ("salt-and-pepper", self.salt_pepper, 1.0), ("fgsm ε", self.fgsm, 1.0), ("pgd ε", self.pgd, 1.0)):
            for v in values:
                if not math.isfinite(v) or v < 0:
                    raise UsageError(f"{name} must be ≥ 0, got {v:g}")
                if high is not None and v > high:
                    raise UsageError(f"{name} must be ≤ {high:g} (images are in [0, 1]), got {v:g}")
        if self.attack_on not in ("ann", "snn", "both"):
            raise UsageError(f"unknown attack target {self.attack_on!r}: use ann, snn or both")
        if self.surrogate not in SURROGATES:
            raise UsageError(f"unknown surrogate {self.surrogate!r}: use one of {', '.join(SURROGATES)}")
        if self.attack_T is not None and self.attack_T < 1:
            raise UsageError("the attack's T must be at least 1")
        if self.pgd_steps < 1:
            raise UsageError("pgd needs at least one step")
        if self.pgd_alpha is not None and not self.pgd_alpha > 0:
            raise UsageError("pgd step size must be > 0")
        if not self.surrogate_alpha > 0:
            raise UsageError("surrogate alpha must be > 0")

    @property
    def steps_of_attack(self) -> int:
        return int(self.attack_T or self.time_steps[-1])

    @property
    def sources(self) -> tuple[CraftedOn, ...]:
        return {"ann": ("ann",), "snn": ("snn",), "both": ("ann", "snn")}[self.attack_on]  # type: ignore[return-value]

    def conditions(self) -> list[Condition]:
        out = [Condition("clean", 0.0)]
        out += [Condition("gaussian", s) for s in self.gaussian]
        out += [Condition("salt-pepper", s) for s in self.salt_pepper]
        for source in self.sources:
            out += [Condition("fgsm", e, source) for e in self.fgsm]
            out += [Condition("pgd", e, source) for e in self.pgd]
        return out

    def to_dict(self) -> dict:
        data = asdict(self)
        data["attack_T"] = self.steps_of_attack
        return data


@dataclass
class RobustnessRow:
    perturbation: str
    strength: float
    crafted_on: str  # "none", "ann" (transfer to the SNN) or "snn" (direct on the SNN)
    description: str
    ann: ClassificationMetrics
    snn: dict[int, ClassificationMetrics]  # T -> scores
    agreement: dict[int, float]  # T -> share of samples where SNN and ANN predict the same class


@dataclass
class RobustnessResult:
    schema_version: int
    samples: int
    time_steps: list[int]
    spec: dict
    rows: list[RobustnessRow]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --- perturbations -----------------------------------------------------------------


def gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """``clip(x + σ·n, 0, 1)`` with n ~ N(0, 1) drawn from ``generator``."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp(0.0, 1.0)


def salt_and_pepper(x: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Each value replaced with probability ``fraction`` by 0 or 1 (equally likely)."""
    hit = torch.rand(x.shape, generator=generator, device=x.device) < fraction
    salt = torch.rand(x.shape, generator=generator, device=x.device) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def gradient_sign(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``sign(∇_x CE(model(x), y))`` (mean cross-entropy, as torchattacks uses)."""
    images = x.clone().detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(images), y)
        (grad,) = torch.autograd.grad(loss, images)
    return grad.sign()


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """FGSM, untargeted: ``clip(x + ε·sign(∇_x CE(model(x), y)), 0, 1)``."""
    return (x + eps * gradient_sign(model, x, y)).clamp(0.0, 1.0).detach()


# --- differentiable SNN twin ---------------------------------------------------------


def _surrogate(name: str, alpha: float) -> nn.Module:
    from spikingjelly.activation_based import surrogate

    if name == "atan":
        return surrogate.ATan(alpha=alpha)
    if name == "sigmoid":
        return surrogate.Sigmoid(alpha=alpha)
    if name == "erf":
        return surrogate.Erf(alpha=alpha)
    if name == "piecewise-quadratic":
        return surrogate.PiecewiseQuadratic(alpha=alpha)
    raise UsageError(f"unknown surrogate {name!r}")


class SurrogateIF(TemporalModule):
    """IF neurons (threshold 1, reset by subtraction, initial potential ``v_init``) whose
    spike ``s_t = H(v_t − 1)`` has a surrogate derivative; out-of-place, so autograd
    runs backpropagation through time."""

    def __init__(self, v_init: float, spike_fn: nn.Module, step_bias: Tensor | None = None, max_spikes: int = 1) -> None:
        super().__init__()
        self.v_init = float(v_init)
        self.spike_fn = spike_fn
        self.max_spikes = int(max_spikes)  # burst neurons: s = sum_{k=1..K} H(v - k) = clip(floor(v), 0, K)
        # the calibrated per-step bias of the IF layer it replaces (x[t] + b[min(t, S-1)])
        self.register_buffer("step_bias", None if step_bias is None else step_bias.detach().clone())

    def reset_state(self) -> None:
        pass

    def forward(self, x: Tensor) -> Tensor:
        seq = x.reshape(self.steps, -1, *x.shape[1:])
        v = torch.full(seq.shape[1:], self.v_init, dtype=seq.dtype, device=seq.device)
        spikes = []
        for t in range(self.steps):
            current = seq[t] if self.step_bias is None else seq[t] + self.step_bias[min(t, self.step_bias.shape[0] - 1)]
            v = v + current
            s = self.spike_fn(v - 1.0) if self.max_spikes == 1 else sum(self.spike_fn(v - float(k)) for k in range(1, self.max_spikes + 1))
            v = v - s
            spikes.append(s)
        return torch.stack(spikes).reshape(x.shape)


class SurrogateSNN(nn.Module):
    """Differentiable twin of ``snn`` (direct input) at ``T`` steps: ``forward(x)`` returns
    the mean output over the steps the readout keeps, ``(1/(T-d)) Σ_{t>d} o_t`` with the
    SNN's readout delay ``d`` (:func:`~annsnn.simulate.readout_start`) (the readout's sum divided by its step count),
    or ``Σ_t w_t o_t`` at T = N for an SNN with per-step readout weights (``--readout weighted``)."""

    def __init__(self, snn: SpikingNetwork, T: int, surrogate: str = "atan", alpha: float = 2.0) -> None:
        super().__init__()
        self.T = int(T)
        self.delay = readout_start(readout_delay_of(snn), self.T, snn.record.calibration.T)
        weights = snn.record.calibration.readout_weights if snn.record.calibration.T == self.T else ()
        # --readout weighted at T = N: sum_t w_t o_t, as simulate reads it (like the mean, an estimate of the ANN's output)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) if weights else None, persistent=False)
        runner = copy.deepcopy(snn.runner("direct"))
        for name, module in list(runner.named_modules()):
            if isinstance(module, IFNeurons):
                parent_name, _, child = name.rpartition(".")
                parent = runner.get_submodule(parent_name) if parent_name else runner
                setattr(parent, child, SurrogateIF(module.v_init, _surrogate(surrogate, alpha), module.step_bias, module.max_spikes))
        for p in runner.parameters():
            p.requires_grad_(False)
        self.runner = runner.eval()
        self._temporal = [m for m in runner.modules() if isinstance(m, TemporalModule)]
        # the copy's own encoder(s): the runner was copied with whatever encoding the shared
        # encoder last had (a Poisson simulate leaves 'poisson'); the twin reads direct input
        self._encoders = [m for m in runner.modules() if isinstance(m, InputEncoder)]

    def forward(self, x: Tensor) -> Tensor:
        for module in self._temporal:
            module.reset_state()
            module.steps = self.T
        for encoder in self._encoders:
            encoder.encoding = "direct"
        out = self.runner(x)
        steps = out.reshape(self.T, x.shape[0], *out.shape[1:])
        if self.weights is not None:
            return torch.einsum("t,tb...->b...", self.weights.to(steps.dtype), steps)
        return steps[self.delay :].mean(0)


def _frozen_ann(snn: SpikingNetwork) -> nn.Module:
    ann = copy.deepcopy(snn.ann).eval()
    for p in ann.parameters():
        p.requires_grad_(False)
    return ann


# --- the study -----------------------------------------------------------------------


class Robustness:
    """Accumulates, batch by batch, ANN and SNN scores under every condition of ``spec``::

        study = Robustness(snn, RobustnessSpec(time_steps=(8, 32), gaussian=(0, 0.1), fgsm=(0, 0.05)))
        for i, (x, y) in enumerate(loader):
            study.run(x, y, batch_index=i)
        result = study.report()   # RobustnessResult
    """

    def __init__(self, snn: SpikingNetwork, spec: RobustnessSpec, *, num_classes: int | None = None, chunk: int | None = None, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.snn = snn.to(self.device).eval()
        self.spec = spec
        self.chunk = chunk
        self.conditions = spec.conditions()
        self.num_classes = num_classes
        self.ann = _frozen_ann(self.snn).to(self.device)
        if spec.pgd:
            try:
                import torchattacks  # noqa: F401
            except ImportError:
                raise UsageError("PGD uses torchattacks: pip install 'annsnn[robustness]'") from None
        self._twin: SurrogateSNN | None = None
        self._records: dict[int, dict[Condition, dict]] = {}
        self._labels: dict[int, Tensor] = {}
        self.samples = 0

    @property
    def twin(self) -> SurrogateSNN:
        if self._twin is None:
            self._twin = SurrogateSNN(self.snn, self.spec.steps_of_attack, self.spec.surrogate, self.spec.surrogate_alpha).to(self.device)
        return self._twin

    def _model(self, source: CraftedOn) -> nn.Module:
        return self.ann if source == "ann" else self.twin

    def _generator(self, batch_index: int, stream: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(((self.spec.seed * 1_000_003 + batch_index) * 1_009 + stream) % (2**63))

    def perturb(self, x: Tensor, y: Tensor, condition: Condition, batch_index: int, cache: dict) -> Tensor:
        """The perturbed batch for ``condition`` (seeded by spec.seed, batch index and condition)."""
        kind, s = condition.kind, condition.strength
        if kind == "clean":
            return x
        if kind == "gaussian":
            return gaussian_noise(x, s, self._generator(batch_index, 1 + self.spec.gaussian.index(s)))
        if kind == "salt-pepper":
            return salt_and_pepper(x, s, self._generator(batch_index, 10_000 + self.spec.salt_pepper.index(s)))
        if kind == "fgsm":
            key = ("sign", condition.crafted_on)
            if key not in cache:
                cache[key] = gradient_sign(self._model(condition.crafted_on), x, y)
            return (x + s * cache[key]).clamp(0.0, 1.0).detach()
        if kind == "pgd":
            import torchattacks

            steps = self.spec.pgd_steps
            alpha = self.spec.pgd_alpha if self.spec.pgd_alpha is not None else 2.5 * s / steps
            attack = torchattacks.PGD(self._model(condition.crafted_on), eps=s, alpha=alpha, steps=steps, random_start=True)
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(self._generator(batch_index, 20_000 + self.spec.pgd.index(s)).initial_seed()))
                with torch.enable_grad():
                    return attack(x, y).detach()
        raise UsageError(f"unknown perturbation {kind!r}: use one of {', '.join(NOISES + ATTACKS)}")

    @torch.no_grad()
    def run(self, inputs: Tensor, labels: Tensor, batch_index: int | None = None) -> None:
        """Score one batch under every condition: the same perturbed tensor to both networks."""
        index = len(self._records) if batch_index is None else int(batch_index)
        if index in self._records:
            raise UsageError(f"batch {index} was already analysed")
        if labels is None:
            raise UsageError("robustness needs labels")
        x = inputs.to(self.device)
        y = labels.to(self.device).long()
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise UsageError("robustness needs images in [0, 1]; normalization belongs inside the model")
        with torch.no_grad():
            check_label_range(y, self.num_classes if self.num_classes is not None else int(self.ann(x[:1]).shape[1]))
        cache: dict = {}
        seen: list[tuple[Tensor, dict]] = []  # perturbed tensors already simulated (e.g. ε = 0 equals the clean batch)
        records: dict[Condition, dict] = {}
        for condition in self.conditions:
            xp = self.perturb(x, y, condition, index, cache)
            record = next((r for t, r in seen if t.shape == xp.shape and torch.equal(t, xp)), None)
            if record is None:
                record = self._score(xp)
                seen.append((xp, record))
            records[condition] = record
        self._records[index] = records
        self._labels[index] = labels.cpu().long()
        self.samples += int(x.shape[0])

    def _score(self, xp: Tensor) -> dict:
        ann_out = self.ann(xp)
        result = simulate(self.snn, xp, self.spec.time_steps, encoding="direct", chunk=self.chunk)
        if self.num_classes is None:
            self.num_classes = int(ann_out.shape[1])
        return {
            "ann": (ann_out.argmax(1).cpu(), ranked_classes(ann_out).cpu()),
            "snn": {t: (result.outputs[t].argmax(1).cpu(), ranked_classes(result.outputs[t]).cpu()) for t in self.spec.time_steps},
        }

    def report(self) -> RobustnessResult:
        if not self._records:
            raise UsageError("no samples were analysed")
        order = sorted(self._records)
        labels = torch.cat([self._labels[i] for i in order])
        classes = int(self.num_classes or int(labels.max()) + 1)
        rows = []
        for condition in self.conditions:
            recs = [self._records[i][condition] for i in order]
            ann_pred = torch.cat([r["ann"][0] for r in recs])
            ann_rank = torch.cat([r["ann"][1] for r in recs])
            snn, agreement = {}, {}
            for t in self.spec.time_steps:
                pred = torch.cat([r["snn"][t][0] for r in recs])
                snn[t] = classification_metrics(pred, labels, classes, torch.cat([r["snn"][t][1] for r in recs]))
                agreement[t] = int((pred == ann_pred).sum()) / len(pred)
            rows.append(RobustnessRow(condition.kind, condition.strength, condition.crafted_on, condition.description,
                                      classification_metrics(ann_pred, labels, classes, ann_rank), snn, agreement))
        notes = []
        if self.spec.gaussian or self.spec.salt_pepper:
            notes.append("noise: the same seeded tensor goes to the ANN and the SNN; values clipped to [0, 1]")
        if "ann" in self.spec.sources and (self.spec.fgsm or self.spec.pgd):
            notes.append("fgsm/pgd crafted_on=ann: white-box on the ANN, applied to both (transfer to the SNN)")
        changed = reference_ann_note(self.snn.record)
        if changed:
            notes.append(changed)
        if "snn" in self.spec.sources and (self.spec.fgsm or self.spec.pgd):
            notes.append(f"fgsm/pgd crafted_on=snn: gradients through the IF dynamics over T={self.spec.steps_of_attack} steps (BPTT) with spikingjelly's {self.spec.surrogate} surrogate (alpha {self.spec.surrogate_alpha:g}); applied to both (transfer to the ANN)")
        if self.spec.pgd:
            notes.append(f"pgd: torchattacks.PGD, L-inf, {self.spec.pgd_steps} steps, random start, step {'2.5·ε/steps' if self.spec.pgd_alpha is None else self.spec.pgd_alpha}")
        return RobustnessResult(SCHEMA_VERSION, self.samples, list(self.spec.time_steps), self.spec.to_dict(), rows, notes)


def run_robustness(snn: SpikingNetwork, loader, spec: RobustnessSpec, *, chunk: int | None = None, device: str | torch.device = "cpu",
                   on_batch: Callable[[int], None] | None = None) -> RobustnessResult:
    """Every batch of the unshuffled ``loader`` through :class:`Robustness`, in order.
    ``on_batch(images)`` is called after each batch with its number of images (a
    progress bar counts images, not batches). The class count is the SNN file's dataset's."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    classes = snn.meta.get("dataset", {}).get("num_classes")
    expected = tuple(snn.meta["input_shape"])
    study = Robustness(snn, spec, num_classes=int(classes) if classes else None, chunk=chunk, device=device)
    for index, (x, y) in enumerate(loader):
        if tuple(x.shape[1:]) != expected:
            raise UsageError(f"the data has shape {tuple(x.shape[1:])}, the SNN expects {expected}")
        study.run(x, y, batch_index=index)
        if on_batch is not None:
            on_batch(int(x.shape[0]))
    return study.report()
