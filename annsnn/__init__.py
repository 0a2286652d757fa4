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

from .analyzer import AnalysisResult, Analyzer
from .artifact import load_snn, save_snn
from .record import SnnRecord
from .calibrator import Calibrator
from .conversion_options import ConversionOptions, ConversionReport
from .convert import convert
from .counting import AnnCounts, SnnCounter, count_ann
from .foreign import GenericNeurons, NeuronSpec
from .foreign_files import load_foreign
from .energy import PRESETS, BreakEven, BreakEvenKind, EnergyModel, break_even, get_energy_model
from .errors import AnnsnnError, RunFailure, UsageError
from .graph import canonicalize
from .io import LoadedModel, load_model
from .nir_io import export_nir, from_nir, load_nir, to_nir
from .modes import ScaleMode, parse_mode, parse_time_steps
from .observer import ActivationObserver
from .analog import AnalogOp
from .ops import AnalogUse, Demand, OpRegistry, OpSpec, Role, default_registry
from .coverage import CoverageResult, check_model
from .pipeline import ann_to_snn
from .simulate import SimulationResult, simulate
from .sources import ZooModel, load_zoo_model
from .workspace import SnnFile
from .snn import SpikingNetwork
from .metrics import ClassificationMetrics, classification_metrics
from .robustness import Robustness, RobustnessResult, RobustnessSpec
from .hardware_measure import MeasuredResult, measure_inference
from .scale import Scale
from .equivalence import Equivalence, check_equivalence

from .version import __version__  # noqa: E402

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
