"""The quantize stage: llm-compressor recipes, VLM ignore rules, calibration data, fidelity, verification,
safe output and the variant manifest. Entry point: `run_quantize`."""

from .calibration import CalibrationSource, parse_source
from .errors import QuantizeInputError, VariantFailed, VariantRejected
from .recipes import METHODS, MethodSpec, parse_methods
from .runner import QuantizeRequest, QuantizeResult, VariantOutcome, run_quantize

__all__ = [
    "METHODS", "CalibrationSource", "MethodSpec", "QuantizeInputError", "QuantizeRequest", "QuantizeResult",
    "VariantFailed", "VariantOutcome", "VariantRejected", "parse_methods", "parse_source", "run_quantize",
]
