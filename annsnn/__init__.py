"""annsnn: convert trained ANNs into true-spike IF SNNs, simulate them, count what they cost.

Library entry points::

    from annsnn import ann_to_snn, ConversionOptions, parse_mode, simulate, Analyzer
    snn, report = ann_to_snn(model, calibration_batches, input_shape=(3, 32, 32))  # calibrated for T=32
    # plain normalization: options=ConversionOptions.plain(parse_mode("99.99"))
    with Analyzer(snn, T=[5, 20, 50]) as a:
        for x, y in loader:
            a.run(x, y)
    result = a.report()
"""
from __future__ import annotations

import sys
import types
from typing import Any

from .version import __version__  # noqa: E402  (no torch: loaded at once)

# Each public name and the module that defines it. They are imported on first use (PEP 562),
# so that importing one module of the package (the command line's entry point, a rule
# module) does not load every other one, and torch, first.
_EXPORTS: dict[str, str] = {
    "AnalysisResult": "analyzer",
    "Analyzer": "analyzer",
    "load_snn": "artifact",
    "save_snn": "artifact",
    "SnnRecord": "record",
    "Calibrator": "calibrator",
    "ConversionOptions": "conversion_options",
    "ConversionReport": "conversion_options",
    "convert": "convert",
    "AnnCounts": "counting",
    "SnnCounter": "counting",
    "count_ann": "counting",
    "GenericNeurons": "foreign_snn",
    "NeuronSpec": "foreign_snn",
    "load_foreign": "foreign_snn_files",
    "PRESETS": "energy",
    "BreakEven": "energy",
    "BreakEvenKind": "energy",
    "EnergyModel": "energy",
    "break_even": "energy",
    "get_energy_model": "energy",
    "AnnsnnError": "errors",
    "RunFailure": "errors",
    "UsageError": "errors",
    "canonicalize": "graph",
    "LoadedModel": "model_files",
    "load_model": "model_files",
    "export_nir": "nir_io",
    "from_nir": "nir_io",
    "load_nir": "nir_io",
    "to_nir": "nir_io",
    "ScaleMode": "modes",
    "parse_mode": "modes",
    "parse_time_steps": "modes",
    "ActivationObserver": "observer",
    "AnalogOp": "analog",
    "AnalogUse": "ops",
    "Demand": "ops",
    "OpRegistry": "ops",
    "OpSpec": "ops",
    "Role": "ops",
    "default_registry": "ops",
    "CoverageResult": "coverage",
    "check_model": "coverage",
    "ann_to_snn": "pipeline",
    "SimulationResult": "simulate",
    "simulate": "simulate",
    "ZooModel": "sources",
    "load_zoo_model": "sources",
    "SnnFile": "workspace",
    "SpikingNetwork": "snn",
    "ClassificationMetrics": "metrics",
    "classification_metrics": "metrics",
    "Robustness": "robustness",
    "RobustnessResult": "robustness",
    "RobustnessSpec": "robustness",
    "MeasuredResult": "hardware_measure",
    "measure_inference": "hardware_measure",
    "Scale": "scale",
    "Equivalence": "equivalence",
    "check_equivalence": "equivalence",
}

__all__ = [
    "__version__",
    "ActivationObserver",
    "AnalysisResult",
    "Analyzer",
    "AnnCounts",
    "AnnsnnError",
    "Calibrator",
    "ConversionOptions",
    "ConversionReport",
    "EnergyModel",
    "LoadedModel",
    "PRESETS",
    "RunFailure",
    "ScaleMode",
    "SimulationResult",
    "SnnRecord",
    "SnnCounter",
    "SpikingNetwork",
    "UsageError",
    "ann_to_snn",
    "BreakEven",
    "BreakEvenKind",
    "ZooModel",
    "load_zoo_model",
    "SnnFile",
    "break_even",
    "canonicalize",
    "convert",
    "count_ann",
    "get_energy_model",
    "load_model",
    "load_snn",
    "parse_mode",
    "parse_time_steps",
    "save_snn",
    "simulate",
    "GenericNeurons",
    "NeuronSpec",
    "load_foreign",
    "export_nir",
    "from_nir",
    "load_nir",
    "to_nir",
    "ClassificationMetrics",
    "classification_metrics",
    "Robustness",
    "RobustnessResult",
    "RobustnessSpec",
    "MeasuredResult",
    "measure_inference",
    "Scale",
    "Equivalence",
    "check_equivalence",
    "AnalogOp",
    "OpSpec",
    "OpRegistry",
    "Role",
    "AnalogUse",
    "Demand",
    "default_registry",
    "CoverageResult",
    "check_model",
]


def __getattr__(name: str) -> Any:
    """``annsnn.NAME``, on first use: the public modules are imported (every one, with the
    static imports below, which the import-cycle check reads), each public name is bound in
    the package, and ``NAME`` is looked up again (a public name, or a submodule they loaded)."""
    if name.startswith("__"):  # dunders (copy, pickle, doctest probe them): never a reason to load torch
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import annsnn.analog
    import annsnn.analyzer
    import annsnn.artifact
    import annsnn.calibrator
    import annsnn.conversion_options
    import annsnn.convert
    import annsnn.counting
    import annsnn.coverage
    import annsnn.energy
    import annsnn.equivalence
    import annsnn.errors
    import annsnn.foreign_snn
    import annsnn.foreign_snn_files
    import annsnn.graph
    import annsnn.hardware_measure
    import annsnn.metrics
    import annsnn.model_files
    import annsnn.modes
    import annsnn.nir_io
    import annsnn.observer
    import annsnn.ops
    import annsnn.pipeline
    import annsnn.record
    import annsnn.robustness
    import annsnn.scale
    import annsnn.simulate
    import annsnn.snn
    import annsnn.sources
    import annsnn.workspace

    for public, module in _EXPORTS.items():
        if public not in globals():
            globals()[public] = getattr(sys.modules[f"{__name__}.{module}"], public)
    if name in globals():
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """The package module. The import system binds each submodule it loads to the package
    (``setattr(annsnn, "convert", <module>)``); two submodules share their name with the
    function they define (``annsnn.convert``, ``annsnn.simulate``), and the function keeps
    the name, as it did when the package imported everything at once."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
