"""Energy models: named dataclasses of per-operation energies (pJ) with their source.

Digital accelerators (``kind="digital"``)::

    E_ANN = E_MAC * MACs + E_AC * bias_adds
    E_SNN = E_MAC * MACs_snn + E_AC * (SyOPs + bias_ACs + neuron_updates)

Neuromorphic chips (``kind="neuromorphic"``) charge per synaptic event and per
neuron update; analog first-layer MACs are charged as synaptic events::

    E_SNN = E_syn * (SyOPs + MACs_snn) + E_neuron * neuron_updates

An ANN does not run on a neuromorphic chip, so its energy (and the ratio) is
taken under the model's ``ann_reference`` digital model and labelled so.

These are *estimates of compute energy*: they ignore memory traffic, which a
memory-aware model must add (see the report notes).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Sequence

from .errors import UsageError

__all__ = ["EnergyModel", "SramModel", "SRAM_LEMAIRE", "PRESETS", "preset_names", "get_energy_model", "load_energy_model", "BreakEven", "break_even"]


@dataclass(frozen=True)
class EnergyModel:
    """Per-operation energies in picojoules, with a citation."""

    name: str
    e_mac_pj: float
    e_ac_pj: float
    e_neuron_pj: float
    citation: str
    kind: Literal["digital", "neuromorphic"] = "digital"
    verified: bool = True
    note: str = ""
    ann_reference: str = "45nm-fp32"

    def __post_init__(self) -> None:
        for field_name in ("e_mac_pj", "e_ac_pj", "e_neuron_pj"):
            value = getattr(self, field_name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UsageError(f"energy model {self.name!r}: {field_name} must be a finite number >= 0, got {value!r}")
        if self.kind not in ("digital", "neuromorphic"):
            raise UsageError(f"energy model {self.name!r}: kind must be 'digital' or 'neuromorphic'")

    def ann_energy_pj(self, macs: float, bias_adds: float) -> float | None:
        """ANN energy, or None for a neuromorphic model (use ``ann_reference``)."""
        if self.kind != "digital":
            return None
        return self.e_mac_pj * macs + self.e_ac_pj * bias_adds

    def snn_energy_pj(self, macs: float, synaptic_acs: float, bias_acs: float, neuron_updates: float) -> float:
        if self.kind == "digital":
            return self.e_mac_pj * macs + self.e_ac_pj * (synaptic_acs + bias_acs + neuron_updates)
        return self.e_ac_pj * (synaptic_acs + macs) + self.e_neuron_pj * neuron_updates

    def to_dict(self) -> dict:
        return asdict(self)


_HOROWITZ = "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm CMOS"

PRESETS: tuple[EnergyModel, ...] = (
    EnergyModel("45nm-fp32", 4.6, 0.9, 0.9, _HOROWITZ + "; fp32 mult 3.7 + add 0.9 pJ", note="a neuron update is charged as one add"),
    EnergyModel("45nm-fp16", 1.5, 0.4, 0.4, _HOROWITZ + "; fp16 mult 1.1 + add 0.4 pJ", note="a neuron update is charged as one add"),
    EnergyModel("45nm-int8", 0.23, 0.03, 0.03, _HOROWITZ + "; int8 mult 0.2 + add 0.03 pJ", note="a neuron update is charged as one add"),
    EnergyModel(
        "12nm-t4", 1.6, 0.58, 0.58,
        "estimate used by the seed report for an NVIDIA T4 (12 nm); not from a vendor or peer-reviewed source",
        verified=False, note="unverified figures; use for comparison with that report only",
    ),
    EnergyModel(
        "loihi", 27.1, 27.1, 81.0,
        "M. Davies et al., 'Loihi: a neuromorphic manycore processor with on-chip learning', IEEE Micro 38(1), 2018; "
        "23.6 + 3.5 pJ per synaptic op and 81 pJ per neuron update as tabulated by keras-spiking (ModelEnergy)",
        kind="neuromorphic", note="first-layer analog MACs are charged as synaptic ops",
    ),
    EnergyModel(
        "spinnaker2", 450.0, 450.0, 2190.0,
        "SpiNNaker 2 prototype figures as tabulated by keras-spiking (ModelEnergy): 450 pJ per synaptic op, 2.19 nJ per neuron update",
        kind="neuromorphic", note="first-layer analog MACs are charged as synaptic ops",
    ),
    EnergyModel(
        "truenorth", 26.0, 26.0, 0.0,
        "P. A. Merolla et al., 'A million spiking-neuron integrated circuit with a scalable communication network and interface', Science 345(6197), 2014: about 26 pJ per synaptic event",
        kind="neuromorphic", note="26 pJ is the whole cost per synaptic event; neuron updates are not charged separately",
    ),
)


@dataclass(frozen=True)
class SramModel:
    """Memory-access energy in the manner of Lemaire et al. (2022).

    An access to an SRAM of ``size`` bytes costs ``E(size)`` pJ per 64-bit word, linear
    in log2(size) between the points (8 KB: 10 pJ, 32 KB: 20 pJ, 1 MB: 100 pJ) and
    clamped outside them; a 32-bit value costs half a 64-bit access. Charged accesses:

    * ANN MAC: read weight + read input; each output: write;
    * SNN synaptic event: read weight + read and write the target potential;
    * SNN analog MAC: as the ANN's; neuron update: read and write its potential.

    Each layer's weights, inputs and potentials sit in their own memory, sized by the
    layer. This is a simplified reading of the paper, enough to show how memory traffic
    shrinks the SNN's advantage.
    """

    points: tuple[tuple[int, float], ...] = ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))
    value_bytes: int = 4
    citation: str = (
        "E. Lemaire et al., 'An analytical estimation of spiking neural networks energy efficiency', "
        "ICONIP 2022: SRAM cost per 64-bit access interpolated by memory size (8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ)"
    )

    def access_pj(self, size_bytes: float) -> float:
        """Energy of one value access to an SRAM holding ``size_bytes``."""
        import math

        size = max(float(size_bytes), 1.0)
        (s0, e0) = self.points[0]
        if size <= s0:
            per64 = e0
        elif size >= self.points[-1][0]:
            per64 = self.points[-1][1]
        else:
            per64 = e0
            for (a, ea), (b, eb) in zip(self.points[:-1], self.points[1:]):
                if a <= size <= b:
                    per64 = ea + (eb - ea) * (math.log2(size) - math.log2(a)) / (math.log2(b) - math.log2(a))
                    break
        return per64 * self.value_bytes / 8


SRAM_LEMAIRE = SramModel()


def preset_names() -> list[str]:
    return [m.name for m in PRESETS]


def get_energy_model(name_or_file: str) -> EnergyModel:
    """A preset by name, or a custom model from a JSON/TOML file."""
    for model in PRESETS:
        if model.name == name_or_file:
            return model
    path = Path(name_or_file)
    if path.suffix.lower() in (".json", ".toml") or path.exists():
        return load_energy_model(path)
    raise UsageError(f"unknown energy model {name_or_file!r}: use one of {', '.join(preset_names())} or a .json/.toml file")


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
    required = ("name", "e_mac_pj", "e_ac_pj", "e_neuron_pj", "citation")
    missing = [key for key in required if key not in data]
    if missing:
        raise UsageError(f"energy-model file {str(path)!r} lacks {', '.join(missing)}")
    allowed = {"name", "e_mac_pj", "e_ac_pj", "e_neuron_pj", "citation", "kind", "verified", "note", "ann_reference"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"energy-model file {str(path)!r} has unknown keys {', '.join(unknown)}")
    return EnergyModel(**{k: data[k] for k in data})


@dataclass(frozen=True)
class BreakEven:
    """Largest T with E_SNN(T) < E_ANN. ``T is None``: not even at T=1.
    ``beyond_simulated``: still cheaper at the last simulated step; ``T`` is then that step."""

    T: int | None
    beyond_simulated: bool

    def to_json(self) -> int | str | None:
        if self.T is None:
            return None
        return f">={self.T}" if self.beyond_simulated else self.T


def break_even(snn_energy_per_step_cumulative: Sequence[float], ann_energy: float) -> BreakEven:
    """Scan cumulative SNN energy E(1..Tmax) (non-decreasing) against the ANN's."""
    values = list(snn_energy_per_step_cumulative)
    lo, hi = 0, len(values)  # find first index with E >= ann (binary search; E is monotone)
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] < ann_energy:
            lo = mid + 1
        else:
            hi = mid
    if lo == 0:
        return BreakEven(None, False)
    return BreakEven(lo, lo == len(values))
