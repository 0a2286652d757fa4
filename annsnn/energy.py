"""Energy models: named dataclasses of per-operation energies (pJ) with their source.

Digital accelerators (``kind="digital"``)::

    E_ANN = E_MAC * MACs + E_AC * bias_adds
    E_SNN = E_MAC * MACs_snn + E_AC * (SyOPs + bias_ACs + neuron_updates + comparisons)

Neuromorphic chips (``kind="neuromorphic"``) charge per synaptic event and per
neuron update, distinguishing active from inactive updates where the chip does;
analog first-layer MACs and max-pool comparisons are charged as synaptic events::

    E_SNN = E_syn * (SyOPs + MACs_snn + comparisons)
          + E_active * active_updates + E_inactive * (neuron_updates - active_updates)

A neuron update is *active* in a step when the neuron receives a non-zero input
current (a synaptic event or a bias) or emits a spike; see
:class:`~annsnn.counting.SnnCounter`. A neuromorphic model has no MAC energy
(``e_mac_pj`` is ``None``): an ANN does not run on the chip, so its energy (and the
ratio) is taken under the model's ``ann_reference`` digital model and labelled so.

A model with a ``memory`` tier (``NAME+sram``) adds memory traffic: SRAM accesses
costed by memory size (Lemaire et al., ICONIP 2022) and DRAM accesses for tensors
larger than ``memory.on_chip_bytes`` (Horowitz, ISSCC 2014); values are
``value_bytes`` wide, following the preset's precision.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Literal, Sequence

from .errors import UsageError

__all__ = [
    "EnergyModel",
    "SramModel",
    "SRAM_LEMAIRE",
    "PRESETS",
    "preset_names",
    "get_energy_model",
    "get_energy_models",
    "load_energy_model",
    "with_memory",
    "BreakEven",
    "BreakEvenKind",
    "ann_energy_pj",
    "break_even",
]


@dataclass(frozen=True)
class SramModel:
    """Memory-access energy: SRAM in the manner of Lemaire et al. (2022), plus a DRAM tier.

    A tensor of ``size`` bytes that fits on chip (``size <= on_chip_bytes``) sits in its
    own SRAM; one 64-bit access costs ``E(size)`` pJ, linear in log2(size) between the
    points (8 KB: 10 pJ, 32 KB: 20 pJ, 1 MB: 100 pJ) and clamped below the first. A larger
    tensor sits in DRAM: ``dram_pj_per_64b`` per 64-bit access (Horowitz, ISSCC 2014:
    1.3-2.6 nJ; the low end is taken, so memory is not overstated). A value of ``w`` bytes
    costs ``w/8`` of a 64-bit access::

        access(size, w) = (E_sram(size) if size <= on_chip_bytes else E_dram) * w / 8

    The default on-chip capacity, 1 MiB per tensor, is the largest memory the SRAM
    curve covers, so the curve is never extrapolated.
    """

    points: tuple[tuple[int, float], ...] = ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))
    on_chip_bytes: int = 1024 * 1024
    dram_pj_per_64b: float = 1300.0
    citation: str = (
        "E. Lemaire et al., 'An analytical estimation of spiking neural networks energy efficiency', "
        "ICONIP 2022: SRAM cost per 64-bit access interpolated by memory size (8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ); "
        "DRAM 1.3 nJ per 64-bit access (low end of M. Horowitz, ISSCC 2014) for tensors over 1 MiB"
    )

    def __post_init__(self) -> None:
        if self.on_chip_bytes > self.points[-1][0]:
            raise UsageError(f"on-chip capacity {self.on_chip_bytes} B exceeds the SRAM curve's last point {self.points[-1][0]} B")

    def in_dram(self, size_bytes: float) -> bool:
        return float(size_bytes) > self.on_chip_bytes

    def access_pj(self, size_bytes: float, value_bytes: int) -> float:
        """Energy of one access to a ``value_bytes``-wide value in a tensor of ``size_bytes``."""
        size = max(float(size_bytes), 1.0)
        if self.in_dram(size):
            return self.dram_pj_per_64b * value_bytes / 8
        (s0, e0) = self.points[0]
        per64 = e0
        if size > s0:
            for (a, ea), (b, eb) in zip(self.points[:-1], self.points[1:]):
                if a <= size <= b:
                    per64 = ea + (eb - ea) * (math.log2(size) - math.log2(a)) / (math.log2(b) - math.log2(a))
                    break
        return per64 * value_bytes / 8


SRAM_LEMAIRE = SramModel()


@dataclass(frozen=True)
class EnergyModel:
    """Per-operation energies in picojoules, with a citation.

    ``e_mac_pj``: a multiply-accumulate; ``None`` for a neuromorphic chip, which has none.
    ``e_ac_pj``: an accumulate (digital) or a synaptic event (neuromorphic).
    ``e_neuron_pj``: a neuron update (neuromorphic: an *active* one);
    ``e_neuron_inactive_pj``: an inactive update where the chip distinguishes it, else ``None``.
    ``value_bytes``: width of a stored value (weights, activations, potentials).
    ``memory``: the memory tier of a memory-aware model, else ``None`` (compute only).
    """

    name: str
    e_mac_pj: float | None
    e_ac_pj: float
    e_neuron_pj: float
    citation: str
    kind: Literal["digital", "neuromorphic"] = "digital"
    verified: bool = True
    note: str = ""
    ann_reference: str = "45nm-fp32"
    e_neuron_inactive_pj: float | None = None
    value_bytes: int = 4
    memory: SramModel | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("digital", "neuromorphic"):
            raise UsageError(f"energy model {self.name!r}: kind must be 'digital' or 'neuromorphic'")
        if self.kind == "digital" and self.e_mac_pj is None:
            raise UsageError(f"energy model {self.name!r}: a digital model needs e_mac_pj")
        if self.kind == "neuromorphic" and self.e_mac_pj is not None:
            raise UsageError(f"energy model {self.name!r}: a neuromorphic model has no MAC energy; leave e_mac_pj out")
        for field_name in ("e_mac_pj", "e_ac_pj", "e_neuron_pj", "e_neuron_inactive_pj"):
            value = getattr(self, field_name)
            if value is None and field_name in ("e_mac_pj", "e_neuron_inactive_pj"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UsageError(f"energy model {self.name!r}: {field_name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.value_bytes, bool) or not isinstance(self.value_bytes, int) or self.value_bytes <= 0:
            raise UsageError(f"energy model {self.name!r}: value_bytes must be a positive integer, got {self.value_bytes!r}")
        if self.memory is not None and self.kind != "digital":
            raise UsageError(f"energy model {self.name!r}: memory-aware energy is defined for digital models only")

    @property
    def e_inactive_pj(self) -> float:
        """Energy of an inactive neuron update (the active figure where none is given)."""
        return self.e_neuron_pj if self.e_neuron_inactive_pj is None else self.e_neuron_inactive_pj

    def ann_energy_pj(self, macs: float, bias_adds: float) -> float | None:
        """ANN compute energy, or None for a neuromorphic model (use ``ann_reference``)."""
        if self.kind != "digital":
            return None
        assert self.e_mac_pj is not None
        return self.e_mac_pj * macs + self.e_ac_pj * bias_adds

    def snn_energy_pj(
        self, *, macs: float, synaptic_acs: float, bias_acs: float, neuron_updates: float,
        active_updates: float, comparisons: float,
    ) -> float:
        """SNN compute energy (the module docstring gives both equations)."""
        if self.kind == "digital":
            assert self.e_mac_pj is not None
            return self.e_mac_pj * macs + self.e_ac_pj * (synaptic_acs + bias_acs + neuron_updates + comparisons)
        return (
            self.e_ac_pj * (synaptic_acs + macs + comparisons)
            + self.e_neuron_pj * active_updates + self.e_inactive_pj * (neuron_updates - active_updates)
        )

    def to_dict(self) -> dict:
        return asdict(self)


def with_memory(base: EnergyModel, memory: SramModel = SRAM_LEMAIRE) -> EnergyModel:
    """``NAME+sram``: ``base`` plus memory traffic. Provenance (verified flag, notes,
    sources) is inherited, so an unverified base stays unverified."""
    if base.kind != "digital":
        raise UsageError(f"{base.name}+sram: memory-aware energy is defined for digital models only")
    if base.memory is not None:
        raise UsageError(f"{base.name}+sram: {base.name} already counts memory traffic; name it once")
    note = "; ".join(part for part in (base.note, "compute plus memory accesses") if part)
    return replace(base, name=f"{base.name}+sram", memory=memory, citation=f"{base.citation}; plus {memory.citation}", note=note)


_HOROWITZ = "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm CMOS"

PRESETS: tuple[EnergyModel, ...] = (
    EnergyModel("45nm-fp32", 4.6, 0.9, 0.9, _HOROWITZ + "; fp32 mult 3.7 + add 0.9 pJ", note="a neuron update is charged as one add", value_bytes=4),
    EnergyModel("45nm-fp16", 1.5, 0.4, 0.4, _HOROWITZ + "; fp16 mult 1.1 + add 0.4 pJ", note="a neuron update is charged as one add", value_bytes=2),
    EnergyModel("45nm-int8", 0.23, 0.03, 0.03, _HOROWITZ + "; int8 mult 0.2 + add 0.03 pJ", note="a neuron update is charged as one add", value_bytes=1),
    EnergyModel(
        "12nm-t4", 1.6, 0.58, 0.58,
        "estimate for an NVIDIA T4 (12 nm) from an earlier, unpublished project report; not from a vendor or peer-reviewed source",
        verified=False, note="unverified figures; use for comparison with that report only; values assumed 4 bytes wide",
    ),
    EnergyModel(
        "loihi", None, 23.6, 81.0,
        "M. Davies et al., 'Loihi: a neuromorphic manycore processor with on-chip learning', IEEE Micro 38(1), 2018, Table 2: "
        "23.6 pJ per synaptic spike op (min), 81 pJ per active and 52 pJ per inactive neuron update",
        kind="neuromorphic", e_neuron_inactive_pj=52.0,
        note="first-layer analog MACs and max-pool comparisons are charged as synaptic ops; a neuron update is active when it receives input or spikes",
    ),
    EnergyModel(
        "spinnaker2", None, 450.0, 2190.0,
        "S. Höppner et al., 'Dynamic power management for neuromorphic many-core systems', IEEE TCAS-I 66(8), 2019, arXiv:1903.08941: "
        "a 28 nm SpiNNaker 2 prototype (not the SpiNNaker 2 chip), 450 pJ per synaptic event and 2.19 nJ per neuron update, as tabulated by keras-spiking (ModelEnergy)",
        kind="neuromorphic", verified=False,
        note="prototype figures (28 nm test chip), not the 22 nm SpiNNaker 2 chip; first-layer analog MACs and max-pool comparisons are charged as synaptic ops",
    ),
    EnergyModel(
        "truenorth", None, 26.0, 0.0,
        "P. A. Merolla et al., 'A million spiking-neuron integrated circuit with a scalable communication network and interface', Science 345(6197), 2014: about 26 pJ per synaptic event",
        kind="neuromorphic", note="26 pJ is the whole cost per synaptic event; neuron updates are not charged separately",
    ),
)


def preset_names() -> list[str]:
    return [m.name for m in PRESETS]


def get_energy_model(name_or_file: str) -> EnergyModel:
    """A preset by name, ``NAME+sram`` (a digital preset or file plus memory traffic,
    see :func:`with_memory`), or a custom model from a JSON/TOML file."""
    if not name_or_file.strip():
        raise UsageError(f"empty energy model name: use one of {', '.join(preset_names())} or a .json/.toml file")
    if name_or_file.endswith("+sram"):
        return with_memory(get_energy_model(name_or_file[: -len("+sram")]))
    for model in PRESETS:
        if model.name == name_or_file:
            return model
    path = Path(name_or_file)
    if path.suffix.lower() in (".json", ".toml") or path.exists():
        return load_energy_model(path)
    raise UsageError(f"unknown energy model {name_or_file!r}: use one of {', '.join(preset_names())} or a .json/.toml file")


def get_energy_models(items: Sequence[str | EnergyModel]) -> list[EnergyModel]:
    """:func:`get_energy_model` for each of ``items`` (names, files or models), refusing two
    with one name: results are keyed by the model's name, so the second would replace the
    first's figures under the same label."""
    models = [item if isinstance(item, EnergyModel) else get_energy_model(item) for item in items]
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise UsageError(f"energy model {model.name!r} is given twice (results are keyed by name): give each model once, and custom files names of their own")
        seen.add(model.name)
    return models


def load_energy_model(path: Path) -> EnergyModel:
    """Read ``{"name", "e_mac_pj", "e_ac_pj", "e_neuron_pj", "citation", ...}`` from JSON or TOML."""
    if not path.is_file():
        raise UsageError(f"energy-model file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"energy-model file {str(path)!r} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"energy-model file {str(path)!r} must hold one table/object")
    required = ("name", "e_ac_pj", "e_neuron_pj", "citation") + (("e_mac_pj",) if data.get("kind", "digital") == "digital" else ())
    missing = [key for key in required if key not in data]
    if missing:
        raise UsageError(f"energy-model file {str(path)!r} lacks {', '.join(missing)}")
    allowed = {"name", "e_mac_pj", "e_ac_pj", "e_neuron_pj", "citation", "kind", "verified", "note", "ann_reference", "e_neuron_inactive_pj", "value_bytes", "memory"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"energy-model file {str(path)!r} has unknown keys {', '.join(unknown)}")
    name = data["name"]
    if isinstance(name, str) and (name in preset_names() or name.endswith("+sram")):
        raise UsageError(f"energy-model file {str(path)!r} names its model {name!r}, a preset's name{' (with +sram)' if name.endswith('+sram') else ''}: give it a name of its own")
    fields = dict(data)
    if fields.get("kind") == "neuromorphic":
        fields.setdefault("e_mac_pj", None)  # a chip has no MAC energy: the field is left out (TOML has no null)
        _check_ann_reference(str(fields.get("ann_reference", "45nm-fp32")), path)
    memory = fields.pop("memory", None)
    if memory is not None:
        if not isinstance(memory, dict) or set(memory) - {"points", "on_chip_bytes", "dram_pj_per_64b", "citation"}:
            raise UsageError(f"energy-model file {str(path)!r}: memory must be a table of points, on_chip_bytes, dram_pj_per_64b, citation")
        if "points" in memory:
            memory["points"] = _sram_points(memory["points"], path)
        try:
            fields["memory"] = SramModel(**memory)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"energy-model file {str(path)!r}: bad memory table ({exc})") from None
    try:
        return EnergyModel(**fields)
    except TypeError as exc:
        raise UsageError(f"energy-model file {str(path)!r}: {exc}") from None


def _check_ann_reference(reference: str, path: Path) -> None:
    """A neuromorphic model prices the ANN under ``reference``: a digital model, checked when
    the file is read (before any simulation)."""
    try:
        model = get_energy_model(reference)
    except UsageError:
        model = None
    if model is None or model.kind != "digital":
        digital = ", ".join(m.name for m in PRESETS if m.kind == "digital")
        raise UsageError(f"energy-model file {str(path)!r}: ann_reference {reference!r} is not a digital energy model (use one of {digital})")


def _sram_points(points: object, path: Path) -> tuple[tuple[int, float], ...]:
    """``[[bytes, pJ], ...]``: positive integer sizes, increasing, with finite energies >= 0."""
    import math

    shape = f"energy-model file {str(path)!r}: memory.points must be [[bytes, pJ], ...] with increasing sizes and finite energies"
    if not isinstance(points, (list, tuple)) or not points:
        raise UsageError(shape)
    out: list[tuple[int, float]] = []
    for point in points:
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise UsageError(f"{shape}; got {point!r}")
        size, energy = point
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or isinstance(energy, bool) or not isinstance(energy, (int, float)) or not math.isfinite(energy) or energy < 0:
            raise UsageError(f"{shape}; got {point!r}")
        if out and size <= out[-1][0]:
            raise UsageError(f"{shape}; {size} does not follow {out[-1][0]}")
        out.append((size, float(energy)))
    return tuple(out)


class BreakEvenKind(Enum):
    """What a break-even T says (see :class:`BreakEven`)."""

    AT = "at"  # cheaper up to T, dearer after it
    BEYOND = "beyond"  # still cheaper at the last simulated step T
    NEVER = "never"  # dearer already at T = 1
    NO_REFERENCE = "no reference"  # no ANN energy to compare with


@dataclass(frozen=True)
class BreakEven:
    """Largest T with E_SNN(T) < E_ANN, as a typed value.

    ``kind`` is AT (``T`` is that largest T), BEYOND (still cheaper at the last simulated
    step, ``T``), NEVER (dearer already at T = 1; ``T`` is None) or NO_REFERENCE (no ANN
    energy to compare with; ``T`` is None). ``str()`` is the one wording every output uses.
    """

    kind: BreakEvenKind
    T: int | None = None

    def __post_init__(self) -> None:
        if (self.T is None) != (self.kind in (BreakEvenKind.NEVER, BreakEvenKind.NO_REFERENCE)):
            raise ValueError(f"BreakEven {self.kind.value} {'needs' if self.T is None else 'takes no'} T")

    @property
    def beyond_simulated(self) -> bool:
        return self.kind is BreakEvenKind.BEYOND

    def __str__(self) -> str:
        if self.kind is BreakEvenKind.AT:
            return f"T={self.T}"
        if self.kind is BreakEvenKind.BEYOND:
            return f"T>={self.T} (cheaper at every simulated T)"
        return "never cheaper" if self.kind is BreakEvenKind.NEVER else "no ANN reference"

    def to_json(self) -> dict:
        return {"kind": self.kind.value, "T": self.T}


def break_even(snn_energy_per_step_cumulative: Sequence[float], ann_energy: float | None) -> BreakEven:
    """Scan cumulative SNN energy E(1..Tmax) (non-decreasing) against the ANN's
    (``None``: no reference)."""
    if ann_energy is None:
        return BreakEven(BreakEvenKind.NO_REFERENCE)
    values = list(snn_energy_per_step_cumulative)
    lo, hi = 0, len(values)  # find first index with E >= ann (binary search; E is monotone)
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] < ann_energy:
            lo = mid + 1
        else:
            hi = mid
    if lo == 0:
        return BreakEven(BreakEvenKind.NEVER)
    return BreakEven(BreakEvenKind.BEYOND if lo == len(values) else BreakEvenKind.AT, lo)


def ann_energy_pj(model: EnergyModel, macs: float, bias_adds: float) -> float:
    """Compute energy of an ANN under ``model``: ``E_MAC MACs + E_AC bias_adds`` of the model
    itself, or of its ``ann_reference`` digital model for a neuromorphic one (an ANN does not
    run on a neuromorphic chip). Memory traffic (``NAME+sram``) is not included here."""
    reference = model if model.kind == "digital" else get_energy_model(model.ann_reference)
    energy = reference.ann_energy_pj(macs, bias_adds)
    if energy is None:
        raise UsageError(f"{model.name}: its ann_reference {model.ann_reference!r} is not a digital model")
    return energy
