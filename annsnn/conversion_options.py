"""What conversion is asked to do (:class:`ConversionOptions`) and what it reports
(:class:`ConversionReport`, one :class:`LayerReport` per activation).

``--calibration NAME`` maps to a threshold method and a bias method through
:data:`annsnn.calibration.CALIBRATIONS`; :meth:`ConversionOptions.calibrated` builds the
options of a name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Literal

from .equivalence import Equivalence
from .errors import UsageError
from .modes import ScaleMode
from .observer import PercentileOf
from .record import DELAY_CRITERIA, READOUTS, DelayCriterion, Readout

__all__ = [
    "ConversionOptions",
    "LayerKind",
    "LayerReport",
    "ConversionReport",
    "PIPELINE_THRESHOLD_SCALE",
    "MaxPoolStrategy",
    "ThresholdMethod",
    "BiasMethod",
    "SHORT_LATENCY_MAX_T",
    "SHORT_LATENCY_BIAS_SAMPLES",
    "BIAS_SAMPLES",
    "DELAY_SAMPLES",
    "short_latency_settings",
]

MaxPoolStrategy = Literal["spiking", "avg"]
# the low-latency pipeline's factor on the IF-search thresholds, chosen on held-out training
# images (annsnn.thresholds, "Scale")
PIPELINE_THRESHOLD_SCALE = 0.9
# At N <= SHORT_LATENCY_MAX_T the default pipeline (IF-search thresholds, per-step bias,
# automatic delay, binary spikes) also reads out with per-step weights fitted by least squares
# (``readout="weighted"``) and fits its step bias on every calibration image the delay choice
# does not read, at most SHORT_LATENCY_BIAS_SAMPLES and at least BIAS_SAMPLES. Chosen on held-out training images of ResNet-20-JPEG
# (docs/low-latency.md): the weighted readout +0.66 / +0.96 / +0.02 points at N = 4 / 8 / 16
# (4,096 images), 768 bias images instead of 256 +0.43 at N = 8 (mean of three calibration sets)
SHORT_LATENCY_MAX_T = 8
BIAS_SAMPLES = 256  # calibration images the bias passes simulate, above SHORT_LATENCY_MAX_T
SHORT_LATENCY_BIAS_SAMPLES = 768  # ... and at most this many at or below it
DELAY_SAMPLES = 256  # calibration images (after the bias images) an automatic readout delay is chosen on
ThresholdMethod = Literal["mode", "if-search"]
BiasMethod = Literal["none", "layer", "step"]


@dataclass(frozen=True)
class ConversionOptions:
    """What a conversion does. The defaults are the best measured method, the one
    ``annsnn convert`` runs: per-channel thresholds searched for T = 32 (scaled by
    :data:`PIPELINE_THRESHOLD_SCALE`), a per-step per-channel bias fitted on top, initial
    potential theta/2 and an automatic readout delay (:meth:`low_latency`). At
    ``T <= SHORT_LATENCY_MAX_T`` the default also has the weighted readout and more bias
    images: build it with :meth:`low_latency` (``ConversionOptions(T=8)`` is calibrated for
    8 steps with the delay readout and 256 bias images, the default before them).
    Plain data-based normalization (Rueckauer et al. 2017) is :meth:`plain`."""

    mode: ScaleMode = ScaleMode("percentile", 99.99)  # read when threshold == "mode"
    channel_wise: bool = True
    v_init: float = 0.5
    maxpool: MaxPoolStrategy = "spiking"
    hybrid: bool = False
    percentile_of: PercentileOf = "all"  # zeros count in percentiles (see observer)
    # post-training calibration for a latency T (annsnn.calibration)
    T: int | None = 32  # steps the SNN is calibrated for (needed by "if-search" and bias); None with plain normalization
    threshold: ThresholdMethod = "if-search"  # "mode": read `mode`; "if-search": annsnn.thresholds
    bias: BiasMethod = "step"  # "layer": Li et al. 2021; "step": per-step (FTBC, Wu et al. 2024); "none"
    bias_samples: int = BIAS_SAMPLES  # calibration images the bias passes simulate (the first ones)
    # True: when the calibration set is too small for bias_samples + delay_samples images, the
    # bias passes give the automatic delay choice its images, down to BIAS_SAMPLES of their own
    # (:meth:`bias_images_of`); False: they take bias_samples, whatever is left
    bias_yields_to_delay: bool = False
    step_solver: str = "linear"  # bias "step": "linear" (shortfall / active share) or "quantile" (exact per step)
    threshold_scale: float = PIPELINE_THRESHOLD_SCALE  # "if-search": theta = threshold_scale * argmin_theta E(theta) (annsnn.thresholds)
    # readout delay k: the first k output steps are left out of the readout (annsnn.simulate);
    # "auto": chosen at T=N by `delay_criterion` on calibration images the bias fit does not
    # use (annsnn.calibration.choose_readout_delay)
    readout_delay: int | Literal["auto"] = "auto"
    delay_samples: int = DELAY_SAMPLES  # "auto": calibration images (after the bias images) the choice reads
    delay_criterion: DelayCriterion = "output-mse"  # "auto": least squared error of the mean readout vs the ANN's output, or "agreement" of classes
    # how the output steps are summed at T = N: "delay" (sum after the readout delay) or
    # "weighted" (per-step weights fitted by least squares on the delay images; needs "auto")
    readout: Readout = "delay"
    # fine-tune the SNN's weights to the ANN's outputs on every calibration image
    # (annsnn.finetune; surrogate-gradient BPTT at T = N), after the calibration passes
    finetune_epochs: int = 0
    finetune_lr: float = 1e-4
    # multi-threshold (burst) neurons: up to K spikes per step, each worth theta = ceiling / K
    # (annsnn.layers.IFNeurons); 1 = binary spikes
    max_spikes: int = 1
    # refit the final linear layer to the ANN's logits on every calibration image, by ridge
    # least squares on the SNN's own features (annsnn.classifier_refit); on for --target nir
    refit_classifier: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.mode, ScaleMode):
            raise UsageError(f"invalid mode {self.mode!r}: give a ScaleMode (annsnn.parse_mode('99.99'))")
        if not isinstance(self.refit_classifier, bool):
            raise UsageError(f"invalid refit_classifier {self.refit_classifier!r}: use True or False")
        if self.refit_classifier and self.T is None:
            raise UsageError("--refit-classifier fits the classifier for the latency the SNN is calibrated for: it needs a calibration for --T N (not --calibration none)")
        if isinstance(self.max_spikes, bool) or not isinstance(self.max_spikes, int) or self.max_spikes < 1:
            raise UsageError(f"invalid --max-spikes {self.max_spikes!r}: use a whole number of spikes per step >= 1")
        if self.max_spikes > 1 and self.bias == "step" and self.step_solver == "quantile":
            raise UsageError("--step-solver quantile solves for binary spikes; with --max-spikes K > 1 use --step-solver linear")
        if self.threshold not in ("mode", "if-search"):
            raise UsageError(f"invalid threshold method {self.threshold!r}: use 'mode' or 'if-search'")
        if self.bias not in ("none", "layer", "step"):
            raise UsageError(f"invalid bias method {self.bias!r}: use 'none', 'layer' or 'step'")
        if (self.threshold != "mode" or self.bias != "none") and (self.T is None or self.T < 1):
            raise UsageError("calibration for a latency needs --T N with N >= 1")
        if self.step_solver not in ("linear", "quantile"):
            raise UsageError(f"invalid step solver {self.step_solver!r}: use 'linear' or 'quantile'")
        if not 0.0 < self.threshold_scale <= 4.0:
            raise UsageError(f"invalid --threshold-scale {self.threshold_scale}: use a factor in (0, 4]")
        if self.threshold_scale != 1.0 and self.threshold != "if-search":
            raise UsageError("--threshold-scale scales the IF-search thresholds; it needs --calibration threshold, threshold+bias or threshold+step-bias")
        if self.readout_delay == "auto":
            if self.T is None:
                raise UsageError("--readout-delay auto chooses the delay for a calibrated latency, and plain normalization (--calibration none) has none: "
                                 "use a fixed --readout-delay K, or a calibration with --T N")
        elif isinstance(self.readout_delay, bool) or not isinstance(self.readout_delay, int) or self.readout_delay < 0:
            raise UsageError(f"invalid --readout-delay {self.readout_delay!r}: use 'auto' or a number of steps >= 0")
        elif self.T is not None and self.readout_delay >= self.T:
            raise UsageError(f"invalid --readout-delay {self.readout_delay}: the readout needs at least one of the T={self.T} steps; use 0..{self.T - 1}")
        if self.delay_criterion not in DELAY_CRITERIA:
            raise UsageError(f"invalid --delay-criterion {self.delay_criterion!r}: use one of {', '.join(DELAY_CRITERIA)}")
        if self.readout_delay != "auto" and self.delay_criterion != DELAY_CRITERIA[0]:  # nothing would read it
            raise UsageError(f"--delay-criterion {self.delay_criterion} chooses an automatic readout delay; this conversion has a fixed one ({self.readout_delay} steps): leave it out or use --readout-delay auto")
        if self.readout not in READOUTS:
            raise UsageError(f"invalid --readout {self.readout!r}: use one of {', '.join(READOUTS)}")
        if self.readout == "weighted" and self.readout_delay != "auto":
            raise UsageError(f"--readout weighted fits its weights where an automatic delay is chosen; this conversion has a fixed delay ({self.readout_delay} steps: "
                             "--readout-delay K, or --calibration none, which has no latency to fit for): use a calibration for --T N with --readout-delay auto")
        if isinstance(self.finetune_epochs, bool) or not isinstance(self.finetune_epochs, int) or self.finetune_epochs < 0:
            raise UsageError(f"invalid --finetune-epochs {self.finetune_epochs!r}: use a whole number >= 0")
        if not (isinstance(self.finetune_lr, (int, float)) and 0.0 < self.finetune_lr <= 1.0):
            raise UsageError(f"invalid --finetune-lr {self.finetune_lr!r}: use a learning rate in (0, 1]")
        if self.finetune_epochs and self.T is None:
            raise UsageError("--finetune-epochs trains the SNN for the latency it is calibrated for: it needs a calibration for --T N (not --calibration none)")
        if self.delay_samples < 1:
            raise UsageError(f"invalid delay samples {self.delay_samples}: use at least 1")
        if not isinstance(self.bias_yields_to_delay, bool):
            raise UsageError(f"invalid bias_yields_to_delay {self.bias_yields_to_delay!r}: use True or False")
        if self.bias_samples < 1:
            raise UsageError(f"invalid bias samples {self.bias_samples}: use at least 1")
        if not 0.0 <= self.v_init < 1.0:
            raise UsageError(f"invalid --v-init {self.v_init}: use a fraction of the threshold in [0, 1)")
        if self.maxpool not in ("spiking", "avg"):
            raise UsageError(f"invalid --maxpool {self.maxpool!r}: use 'spiking' or 'avg'")
        if self.percentile_of not in ("positive", "all"):
            raise UsageError(f"invalid --percentile-of {self.percentile_of!r}: use 'positive' or 'all'")

    @classmethod
    def low_latency(cls, T: int = 32, **overrides) -> "ConversionOptions":
        """The pipeline ``annsnn convert`` uses by default: per-channel T-aware thresholds
        (scaled by :data:`PIPELINE_THRESHOLD_SCALE`), a per-step per-channel bias fitted for
        ``T`` steps, initial potential theta/2, and a readout delay chosen at T on
        calibration images the bias fit does not use: ``ConversionOptions()`` at ``T``.
        At ``T <= SHORT_LATENCY_MAX_T`` (binary spikes) the readout is weighted and the bias
        fit takes up to 768 images, leaving the delay choice its 256
        (:func:`short_latency_settings`). ``overrides`` (any field) win."""
        settings = dict(T=T, threshold="if-search", bias="step", channel_wise=True, v_init=0.5, threshold_scale=PIPELINE_THRESHOLD_SCALE, readout_delay="auto")
        settings.update(overrides)
        return cls(**short_latency_settings(settings, set(overrides)))

    @classmethod
    def plain(cls, mode: ScaleMode = ScaleMode("percentile", 99.99), **overrides) -> "ConversionOptions":
        """Plain data-based normalization (Rueckauer et al. 2017; ``annsnn convert
        --calibration none --v-init 0``): each layer's threshold is ``mode`` of its calibration
        activations, no calibration for a latency, no bias, initial potential 0.
        ``overrides`` (any field) win; this is what ``ConversionOptions()`` meant before the
        default became the calibrated pipeline."""
        settings: dict = dict(mode=mode, channel_wise=False, v_init=0.0, T=None, threshold="mode", bias="none", threshold_scale=1.0, readout_delay=0)
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def calibrated(cls, calibration: str, T: int | None, **overrides) -> "ConversionOptions":
        """The options of ``annsnn convert --calibration NAME --T N`` (see
        :data:`annsnn.calibration.CALIBRATIONS`): the named threshold and bias methods with
        the low-latency pipeline's settings where they apply (per-channel IF-search
        thresholds scaled by its ``threshold_scale``, its step solver, v_init 1/2, its
        readout delay; at ``T <= SHORT_LATENCY_MAX_T`` its weighted readout and bias images,
        :func:`short_latency_settings`).
        ``calibration="none"`` is plain ``--mode`` normalization, per layer. ``overrides``
        (any field; None leaves the default) win."""
        from .calibration import calibration_options

        threshold, bias = calibration_options(calibration)
        pipeline = cls.low_latency(1)
        settings: dict = dict(threshold=threshold, bias=bias, channel_wise=threshold == "if-search", v_init=pipeline.v_init,
                              T=T if calibration != "none" else None)
        if threshold == "if-search":
            settings["threshold_scale"] = pipeline.threshold_scale
        if bias == "step":
            settings["step_solver"] = pipeline.step_solver
        if calibration != "none":
            settings["readout_delay"] = pipeline.readout_delay
        given = {key: value for key, value in overrides.items() if value is not None}
        if "step_solver" in given and bias != "step":
            raise UsageError(f"--step-solver applies to the per-step bias; --calibration {calibration} has none")
        if "bias_samples" in given and bias == "none":
            raise UsageError(f"--bias-samples sets the images the bias fit simulates; --calibration {calibration} fits no bias: drop --bias-samples")
        settings.update(given)
        plain = cls.plain()
        full = {**{name: getattr(plain, name) for name in cls.__dataclass_fields__}, **settings}
        return cls.plain(**short_latency_settings(full, set(given)))

    @property
    def bias_images(self) -> int:
        """The fewest calibration images the bias passes take first (0 without a bias); an
        automatic readout delay is chosen on the ones after them, so a calibration set needs
        more."""
        if self.bias == "none":
            return 0
        return min(self.bias_samples, BIAS_SAMPLES) if self.bias_yields_to_delay else self.bias_samples

    def bias_images_of(self, total: int) -> int:
        """How many of ``total`` calibration images the bias passes take (the first ones):
        ``bias_samples``, or with ``bias_yields_to_delay`` and an automatic delay,
        ``min(bias_samples, max(BIAS_SAMPLES, total - delay_samples))``, so that the delay
        choice keeps its ``delay_samples`` images while the bias has more than 256."""
        if self.bias == "none":
            return 0
        if self.bias_yields_to_delay and self.readout_delay == "auto":
            return min(self.bias_samples, max(self.bias_images, total - self.delay_samples), total)
        return min(self.bias_samples, total)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode.to_dict(),
            "channel_wise": self.channel_wise,
            "v_init": self.v_init,
            "maxpool": self.maxpool,
            "hybrid": self.hybrid,
            "percentile_of": self.percentile_of,
            "T": self.T,
            "threshold": self.threshold,
            "bias": self.bias,
            "bias_samples": self.bias_samples,
            **({"bias_yields_to_delay": True} if self.bias_yields_to_delay else {}),  # written only when set: earlier SNN files stay byte for byte
            "step_solver": self.step_solver,
            "threshold_scale": self.threshold_scale,
            "readout_delay": self.readout_delay,
            "delay_samples": self.delay_samples,
            "delay_criterion": self.delay_criterion,
            "max_spikes": self.max_spikes,
            **({"readout": self.readout} if self.readout != READOUTS[0] else {}),  # the default is not written: earlier SNN files stay byte for byte
            **({"finetune_epochs": self.finetune_epochs, "finetune_lr": self.finetune_lr} if self.finetune_epochs else {}),  # likewise
            **({"refit_classifier": True} if self.refit_classifier else {}),  # likewise
        }


def short_latency_settings(settings: dict, given: set[str]) -> dict:
    """``settings`` (ConversionOptions fields) with the short-latency defaults added where they
    apply and ``given`` (fields the caller set) does not name them: for the default pipeline
    (IF-search thresholds, per-step bias, automatic delay, binary spikes) at
    ``T <= SHORT_LATENCY_MAX_T``, ``readout="weighted"`` and
    ``bias_samples = SHORT_LATENCY_BIAS_SAMPLES`` with ``bias_yields_to_delay``: the bias
    fit takes the calibration images the delay choice does not read, 768 of the default
    1,024, and never fewer than 256 (:meth:`ConversionOptions.bias_images_of`).
    The settings are fields like any other: ``dataclasses.replace(options, T=16)`` keeps
    them; build another latency's default with :meth:`ConversionOptions.low_latency`."""
    T = settings.get("T")
    applies = (T is not None and T <= SHORT_LATENCY_MAX_T and settings.get("threshold") == "if-search" and settings.get("bias") == "step"
               and settings.get("readout_delay") == "auto" and settings.get("max_spikes", 1) == 1)
    if not applies:
        return settings
    added: dict = {}
    if "readout" not in given:
        added["readout"] = "weighted"
    if "bias_samples" not in given:
        added["bias_samples"] = SHORT_LATENCY_BIAS_SAMPLES
        if "bias_yields_to_delay" not in given:
            added["bias_yields_to_delay"] = True
    return {**settings, **added}


class LayerKind(StrEnum):
    """What a converted activation became."""

    IF = "IF"  # IF neurons (reset by subtraction)
    ANALOG = "analog"  # kept analog under --hybrid (annsnn.analog.AnalogOp)


@dataclass
class LayerReport:
    """One converted activation: IF neurons (``ceiling``: the clip of a ReLU6-like
    activation, None for a plain ReLU) or an op kept analog (``op``: its name)."""

    name: str
    kind: LayerKind
    neurons: int
    max: float | None  # calibration max; None for an analog layer (not observed)
    scale: float  # the layer's scale (mean over channels when channel-wise)
    clipped_fraction: float  # share of calibration activations above the scale
    spiking: bool
    scales: list[float] = field(default_factory=list)  # one per channel when channel-wise, else [scale]
    scale_rule: str = ""  # how the scale was chosen, fallbacks included (see annsnn.calibrator.neuron_scale)
    ceiling: float | None = None  # IF: the activation's clip (ReLU6: 6); None: none
    op: str | None = None  # ANALOG: the op kept analog

    def __post_init__(self) -> None:
        self.kind = LayerKind(self.kind)

    @property
    def label(self) -> str:
        """``IF``, ``IF clip 6`` or ``analog <op>``, as the conversion table shows it."""
        if self.kind is LayerKind.ANALOG:
            return f"analog {self.op}"
        return "IF" if self.ceiling is None else f"IF clip {self.ceiling:g}"


@dataclass
class ConversionReport:
    """Per-layer conversion summary (the table ``annsnn convert`` prints)."""

    options: dict
    layers: list[LayerReport] = field(default_factory=list)
    analog: list[str] = field(default_factory=list)
    folded_batchnorm: list[str] = field(default_factory=list)
    reordered_maxpool: list[str] = field(default_factory=list)
    rescale_synapses: list[str] = field(default_factory=list)
    calibration_samples: int = 0
    notes: list[str] = field(default_factory=list)
    # set by ann_to_snn: the canonical ANN (the SNN's reference, ``snn.ann``) was checked
    # equal to the user's model on the first calibration batch
    equivalence: Equivalence | None = None

    @property
    def neurons(self) -> int:
        return sum(layer.neurons for layer in self.layers if layer.spiking)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["neurons"] = self.neurons
        for row, layer in zip(data["layers"], self.layers):
            row["kind"] = layer.kind.value
            row["label"] = layer.label
        if self.equivalence is not None:
            data["equivalence"]["relative_deviation"] = self.equivalence.relative_deviation
        return data
