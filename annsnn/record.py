"""The typed record of a converted SNN: what it came from and how it was calibrated.

:class:`SnnRecord` replaces the untyped ``snn.meta`` dict. It is frozen, and every value is
checked when it is built, so a record read from a file is valid or refused with one line
(``UsageError``, exit 2): integers are integers in range (never a bool, a float or a
string), floats are finite, shapes are positive.

Versions (``SnnRecord.to_dict()["record_version"]``):

* SNN file format 1 stored a flat ``meta`` dict; :meth:`SnnRecord.from_meta` reads it.
* SNN file format 2 stores ``record``, the nested :meth:`SnnRecord.to_dict`, with
  ``record_version`` = :data:`RECORD_VERSION`; :meth:`SnnRecord.from_dict` reads it.

``SnnRecord.meta()`` gives the flat dict of format 1 for code that still reads ``snn.meta``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from .errors import UsageError

__all__ = ["SnnRecord", "reference_ann_note", "Source", "Normalization", "Calibration", "RECORD_VERSION", "MAX_TIME_STEPS", "MAX_READOUT_WEIGHT", "calibration_method", "CALIBRATIONS", "DelayCriterion", "DELAY_CRITERIA", "Readout", "READOUTS"]

RECORD_VERSION = 2
# --calibration NAME -> (threshold method, bias method); the first is the default pipeline
# (re-exported by annsnn.calibration, which implements them)
CALIBRATIONS: dict[str, tuple[str, str]] = {
    "threshold+step-bias": ("if-search", "step"),
    "threshold+bias": ("if-search", "layer"),
    "threshold": ("if-search", "none"),
    "step-bias": ("mode", "step"),
    "bias": ("mode", "layer"),
    "none": ("mode", "none"),
}
# --delay-criterion: how an automatic readout delay is chosen (annsnn.calibration.choose_readout_delay,
# which re-exports these); the first is the default
DelayCriterion = Literal["output-mse", "agreement"]
DELAY_CRITERIA: tuple[DelayCriterion, ...] = ("output-mse", "agreement")
# --readout: how the output steps are summed at T = N. "delay": sum_{t > k} o_t (k the readout
# delay); "weighted": sum_t w_t o_t, w fitted by least squares against the ANN's output
# (annsnn.calibration.fit_readout_weights). The first is the default.
Readout = Literal["delay", "weighted"]
READOUTS: tuple[Readout, ...] = ("delay", "weighted")
MAX_READOUT_WEIGHT = 1e6  # |w_t| of --readout weighted (fitted ones are O(1)); larger ones are refused on load
MAX_TIME_STEPS = 100_000  # the largest T annsnn simulates (as annsnn.modes.MAX_TIME_STEPS)
_MAX_NUMEL = 2**40  # no activation of one sample has more elements than this


def _bad(what: str) -> UsageError:
    return UsageError(f"SNN file refused: {what} (crafted or damaged file; nothing from it was run)")


def _int(value: Any, name: str, low: int, high: int | None = None) -> int:
    """An int (not a bool, float or string) with ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name} is {value!r}, not an integer")
    if value < low or (high is not None and value > high):
        raise _bad(f"{name} = {value} is out of range ({low}..{'' if high is None else high})")
    return value


def _float(value: Any, name: str) -> float:
    """A finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f"{name} is {value!r}, not a finite number")
    return float(value)


def _weights(value: Any) -> tuple[float, ...]:
    """The readout weights of a file: a list of finite numbers (at most MAX_TIME_STEPS)."""
    if not isinstance(value, (list, tuple)) or len(value) > MAX_TIME_STEPS:
        raise _bad(f"readout_weights is {type(value).__name__}, not a list of at most {MAX_TIME_STEPS} numbers")
    return tuple(_float(w, "a readout weight") for w in value)


def _finetune(value: Any) -> dict | None:
    """The --finetune-epochs record (annsnn.finetune.FinetuneResult.to_dict): known keys,
    counts as integers, losses as finite numbers (or null where training diverged)."""
    data = _mapping(value, "finetune")
    if data is None:
        return None
    unknown = set(data) - {"epochs", "lr", "samples", "parameters", "loss", "initial_loss", "final_loss", "kept"}
    if unknown:
        raise _bad(f"finetune has unknown fields {sorted(unknown)}")
    for key in ("epochs", "samples", "parameters"):
        _int(data.get(key), f"finetune.{key}", 0)
    _float(data.get("lr"), "finetune.lr")
    _float(data.get("initial_loss"), "finetune.initial_loss")
    losses = data.get("loss")
    if not isinstance(losses, list):
        raise _bad(f"finetune.loss is {losses!r}, not a list of per-epoch losses")
    for loss in [data.get("final_loss"), *losses]:
        if loss is not None:
            _float(loss, "a finetune loss")
    if not isinstance(data.get("kept"), bool):
        raise _bad(f"finetune.kept is {data.get('kept')!r}, not true or false")
    return data


def _str(value: Any, name: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _bad(f"{name} is {value!r}, not a string")
    return value


def _mapping(value: Any, name: str, *, optional: bool = True) -> dict | None:
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise _bad(f"{name} is a {type(value).__name__}, not an object")
    _check_json(value, name)
    return value


def _check_json(value: Any, name: str) -> None:
    """Every number inside ``value`` is finite (a crafted NaN or inf is refused anywhere)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(f"{name} holds {value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, f"{name}.{key}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_json(item, name)


def reference_ann_note(record: "SnnRecord") -> str | None:
    """What a report's ANN row is, when it is not the user's model as given: with
    ``--maxpool avg`` the reference ANN is the model with average pools for its max-pools."""
    if record.options.get("maxpool") == "avg":
        return ("the ANN row is the model as converted with --maxpool avg (its max-pools made average pools), "
                "not the original model: its top-1, the gap and its energy are that changed network's")
    return None


def calibration_method(options: Mapping[str, Any]) -> str:
    """The ``--calibration`` name of conversion ``options`` (``ConversionOptions.to_dict()``):
    its (threshold, bias) pair looked up in :data:`CALIBRATIONS`."""
    pair = (options.get("threshold", "mode"), options.get("bias", "none"))
    for name, methods in CALIBRATIONS.items():
        if methods == pair:
            return name
    return f"threshold {pair[0]}, bias {pair[1]}"


@dataclass(frozen=True)
class Source:
    """The model file the SNN was converted from."""

    path: str
    kind: str  # checkpoint | safetensors | torchscript | pt2 | onnx | pickle | zoo
    arch: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> "Source":
        data = _mapping(data, "source", optional=False)
        assert data is not None
        return cls(str(_str(data.get("path", ""), "source.path")), str(_str(data.get("kind", ""), "source.kind")), _str(data.get("arch"), "source.arch", optional=True))

    def to_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "arch": self.arch}


@dataclass(frozen=True)
class Normalization:
    """Input normalization ``(x - mean) / std`` per channel, and where it came from."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise _bad("normalization mean and std differ in length")
        for value in self.std:
            if _float(value, "normalization.std") <= 0:
                raise _bad(f"normalization.std holds {value}, not a positive number")
        for value in self.mean:
            _float(value, "normalization.mean")

    @classmethod
    def from_dict(cls, data: Any) -> "Normalization":
        data = _mapping(data, "normalization", optional=False)
        assert data is not None
        mean, std = data.get("mean"), data.get("std")
        if not isinstance(mean, list) or not isinstance(std, list):
            raise _bad("normalization mean/std are not lists")
        return cls(tuple(_float(v, "normalization.mean") for v in mean), tuple(_float(v, "normalization.std") for v in std), str(_str(data.get("source", ""), "normalization.source")))

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "source": self.source}


@dataclass(frozen=True)
class Calibration:
    """How the SNN was calibrated.

    ``T`` is the latency N it was calibrated for (None: plain normalization, valid at every
    T); ``method`` the ``--calibration`` name; ``readout_delay`` the k of
    :func:`annsnn.simulate.readout_start` (0 <= k <= MAX_TIME_STEPS).
    """

    T: int | None = None
    method: str = "none"
    readout_delay: int = 0
    delay_choice: dict | None = None
    bias_fit: dict | None = None
    # --readout weighted: w_1..w_N, the readout at T = N is sum_t w_t o_t (empty: the delay's sum)
    readout_weights: tuple[float, ...] = ()
    finetune: dict | None = None  # --finetune-epochs: annsnn.finetune.FinetuneResult.to_dict()
    classifier_refit: dict | None = None  # --refit-classifier: annsnn.classifier_refit.ClassifierRefit.to_dict()

    def __post_init__(self) -> None:
        if self.T is not None:
            _int(self.T, "calibrated_T", 1, MAX_TIME_STEPS)
        _int(self.readout_delay, "readout_delay", 0, MAX_TIME_STEPS)
        if not isinstance(self.readout_weights, tuple):
            raise _bad(f"readout_weights is a {type(self.readout_weights).__name__}, not a tuple")
        for w in self.readout_weights:
            if abs(_float(w, "a readout weight")) > MAX_READOUT_WEIGHT:  # float32 products must stay finite
                raise _bad(f"a readout weight is {w!r}, beyond +-{MAX_READOUT_WEIGHT:g}")
        if self.readout_weights and len(self.readout_weights) != self.T:
            raise _bad(f"readout_weights has {len(self.readout_weights)} entries for a latency of {self.T}: one per step is needed")
        _str(self.method, "calibration method")
        _mapping(self.delay_choice, "delay_choice")
        _mapping(self.bias_fit, "bias_fit")
        _finetune(self.finetune)
        _mapping(self.classifier_refit, "classifier_refit")

    def to_dict(self) -> dict:
        fitted = {"readout_weights": list(self.readout_weights)} if self.readout_weights else {}  # only when fitted: other files stay byte for byte
        fitted |= {"finetune": self.finetune} if self.finetune is not None else {}
        fitted |= {"classifier_refit": self.classifier_refit} if self.classifier_refit is not None else {}
        return {"T": self.T, "method": self.method, "readout_delay": self.readout_delay, "delay_choice": self.delay_choice, "bias_fit": self.bias_fit, **fitted}

    @classmethod
    def from_dict(cls, data: Any) -> "Calibration":
        data = _mapping(data, "calibration", optional=False)
        assert data is not None
        unknown = set(data) - {"T", "method", "readout_delay", "delay_choice", "bias_fit", "readout_weights", "finetune", "classifier_refit"}
        if unknown:
            raise _bad(f"calibration has unknown fields {sorted(unknown)}")
        return cls(T=data.get("T"), method=data.get("method", "none"), readout_delay=data.get("readout_delay", 0), delay_choice=data.get("delay_choice"), bias_fit=data.get("bias_fit"),
                   readout_weights=_weights(data.get("readout_weights", [])), finetune=data.get("finetune"), classifier_refit=data.get("classifier_refit"))


# keys of the format-1 meta dict that the typed fields hold; any other key goes to ``extra``
_META_KEYS = ("input_shape", "max_activation_numel", "source", "dataset", "normalization", "equivalence", "options", "scales", "report",
              "annsnn_version", "calibrated_T", "readout_delay", "delay_choice", "bias_fit", "readout_weights", "finetune")


@dataclass(frozen=True)
class SnnRecord:
    """Everything recorded about a converted SNN besides its graphs and tensors.

    * ``input_shape``: one sample's shape ``(C, H, W)``, positive integers;
    * ``max_activation_numel``: the largest activation of one sample (sets the chunking of
      :func:`annsnn.simulate.auto_chunk`);
    * ``calibration``: N, method, readout delay (:class:`Calibration`);
    * ``source``, ``dataset`` (``DatasetSpec.to_dict()``: name, num_classes, ...),
      ``normalization``: provenance, None when not recorded;
    * ``equivalence``: the canonical-graph check (``Equivalence`` as a dict), ``options``
      (``ConversionOptions.to_dict()``), ``scales`` and ``report``
      (``ConversionReport.to_dict()``): the conversion's own account;
    * ``extra``: any other key a format-1 file or a foreign network records.
    """

    input_shape: tuple[int, ...]
    max_activation_numel: int = 1
    calibration: Calibration = field(default_factory=Calibration)
    source: Source | None = None
    dataset: dict | None = None
    normalization: Normalization | None = None
    equivalence: dict | None = None
    options: dict = field(default_factory=dict)
    scales: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    annsnn_version: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = self.input_shape
        if not isinstance(shape, tuple) or not 1 <= len(shape) <= 5:
            raise _bad(f"input_shape {shape!r} is not a shape of 1 to 5 dimensions")
        numel = 1
        for size in shape:
            numel *= _int(size, "input_shape", 1)
        if numel > _MAX_NUMEL:
            raise _bad(f"input_shape {list(shape)} has {numel:.3g} elements per sample")
        _int(self.max_activation_numel, "max_activation_numel", 1, _MAX_NUMEL)
        if not isinstance(self.calibration, Calibration):
            raise _bad("calibration is not a Calibration")
        dataset = _mapping(self.dataset, "dataset")
        if dataset is not None:
            _str(dataset.get("name"), "dataset.name", optional=True)
            if dataset.get("num_classes") is not None:
                _int(dataset["num_classes"], "dataset.num_classes", 1)
        _mapping(self.equivalence, "equivalence")
        for name in ("options", "scales", "report", "extra"):
            _mapping(getattr(self, name), name, optional=False)
        _str(self.annsnn_version, "annsnn_version", optional=True)
        if self.options.get("v_init") is not None:
            _float(self.options["v_init"], "options.v_init")

    # -- reading -----------------------------------------------------------------------

    @classmethod
    def from_meta(cls, meta: Any) -> "SnnRecord":
        """The record of a format-1 ``meta`` dict (every value validated)."""
        if not isinstance(meta, dict):
            raise _bad(f"its metadata is a {type(meta).__name__}, not an object")
        shape = meta.get("input_shape")
        if not isinstance(shape, list):
            raise _bad(f"input_shape is {shape!r}, not a list")
        options = _mapping(meta.get("options", {}), "options", optional=False) or {}
        calibrated = meta.get("calibrated_T")
        calibration = Calibration(
            T=calibrated, method=calibration_method(options) if options else "none", readout_delay=meta.get("readout_delay", 0),
            delay_choice=meta.get("delay_choice"), bias_fit=meta.get("bias_fit"), readout_weights=_weights(meta.get("readout_weights", [])),
            finetune=meta.get("finetune"),
        )
        return cls(
            input_shape=tuple(shape),
            max_activation_numel=meta.get("max_activation_numel", 1),
            calibration=calibration,
            source=Source.from_dict(meta["source"]) if isinstance(meta.get("source"), dict) and "path" in meta["source"] else None,
            dataset=meta.get("dataset"),
            normalization=Normalization.from_dict(meta["normalization"]) if meta.get("normalization") is not None else None,
            equivalence=meta.get("equivalence"),
            options=options,
            scales=meta.get("scales", {}),
            report=meta.get("report", {}),
            annsnn_version=meta.get("annsnn_version"),
            extra={k: v for k, v in meta.items() if k not in _META_KEYS or (k == "source" and not (isinstance(v, dict) and "path" in v))},
        )

    @classmethod
    def from_dict(cls, data: Any) -> "SnnRecord":
        """The record of :meth:`to_dict` output (format 2), every value validated."""
        if not isinstance(data, dict):
            raise _bad(f"its record is a {type(data).__name__}, not an object")
        if data.get("record_version") != RECORD_VERSION:
            raise UsageError(f"SNN record version {data.get('record_version')!r}; this annsnn reads version {RECORD_VERSION}")
        known = {f.name for f in dataclasses.fields(cls)} | {"record_version"}
        unknown = set(data) - known
        if unknown:
            raise _bad(f"its record has unknown fields {sorted(unknown)}")
        shape = data.get("input_shape")
        if not isinstance(shape, list):
            raise _bad(f"input_shape is {shape!r}, not a list")
        return cls(
            input_shape=tuple(shape),
            max_activation_numel=data.get("max_activation_numel", 1),
            calibration=Calibration.from_dict(data.get("calibration", {})),
            source=Source.from_dict(data["source"]) if data.get("source") is not None else None,
            dataset=data.get("dataset"),
            normalization=Normalization.from_dict(data["normalization"]) if data.get("normalization") is not None else None,
            equivalence=data.get("equivalence"),
            options=data.get("options", {}),
            scales=data.get("scales", {}),
            report=data.get("report", {}),
            annsnn_version=data.get("annsnn_version"),
            extra=data.get("extra", {}),
        )

    # -- writing -----------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-ready, with ``record_version``; :meth:`from_dict` reads it back equal."""
        return {
            "record_version": RECORD_VERSION,
            "input_shape": list(self.input_shape),
            "max_activation_numel": self.max_activation_numel,
            "calibration": self.calibration.to_dict(),
            "source": None if self.source is None else self.source.to_dict(),
            "dataset": self.dataset,
            "normalization": None if self.normalization is None else self.normalization.to_dict(),
            "equivalence": self.equivalence,
            "options": self.options,
            "scales": self.scales,
            "report": self.report,
            "annsnn_version": self.annsnn_version,
            "extra": self.extra,
        }

    def meta(self) -> dict:
        """The flat dict of SNN file format 1 (what ``snn.meta`` held): keys that are
        not recorded are left out, as format 1 did."""
        out: dict = dict(self.extra)
        if self.source is not None:
            out["source"] = self.source.to_dict()
        if self.dataset is not None:
            out["dataset"] = self.dataset
        if self.normalization is not None:
            out["normalization"] = self.normalization.to_dict()
        if self.annsnn_version is not None:
            out["annsnn_version"] = self.annsnn_version
        if self.options:
            out["options"] = self.options
        out["input_shape"] = list(self.input_shape)
        out["max_activation_numel"] = self.max_activation_numel
        if self.scales:
            out["scales"] = self.scales
        if self.report:
            out["report"] = self.report
        if self.equivalence is not None:
            out["equivalence"] = self.equivalence
        cal = self.calibration
        if cal.bias_fit is not None:
            out["bias_fit"] = cal.bias_fit
        if cal.readout_delay or cal.delay_choice is not None:
            out["readout_delay"] = cal.readout_delay
        if cal.delay_choice is not None:
            out["delay_choice"] = cal.delay_choice
        if cal.readout_weights:  # written only when fitted: every other SNN's file is as before
            out["readout_weights"] = list(cal.readout_weights)
        if cal.finetune is not None:
            out["finetune"] = cal.finetune
        if cal.T is not None:
            out["calibrated_T"] = cal.T
        return out

    def replace(self, **changes: Any) -> "SnnRecord":
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def dataset_name(self) -> str | None:
        return None if self.dataset is None else self.dataset.get("name")

    @property
    def num_classes(self) -> int | None:
        return None if self.dataset is None else self.dataset.get("num_classes")
