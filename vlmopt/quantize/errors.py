"""Errors of the quantize stage. The CLI maps QuantizeInputError to one red line and exit code 2."""

from __future__ import annotations


class QuantizeInputError(ValueError):
    """The user's input cannot be quantized as given (path, model folder, method, calibration data, layer sizes).
    Raised before anything is written."""


class VariantFailed(RuntimeError):
    """One variant could not be produced or did not pass verification; the run goes on with the others."""


class VariantRejected(RuntimeError):
    """A variant was produced but its fidelity is worse than `--max-kl`; it is not kept."""
