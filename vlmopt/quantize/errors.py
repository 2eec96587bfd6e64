"""Errors of the quantize stage. The CLI maps QuantizeInputError to one red line and exit code 2."""

from __future__ import annotations


class QuantizeInputError(ValueError):
    """The user's input cannot be quantized as given (path, model folder, method, calibration data, layer sizes).
    Raised before anything is written."""


class VariantFailed(RuntimeError):
    """One variant could not be produced or did not pass verification; the run goes on with the others."""


class VariantRejected(RuntimeError):
    """A variant was produced but its fidelity is worse than `--max-kl`; it is not kept."""


def describe_exception(exc: BaseException) -> str:
    """`Type: first informative line` for an exception, never an empty reason.

    Some libraries raise with messages that start with a newline or are empty (transformers' missing-backend
    ImportError starts with "\\n" and names the class on its second line, e.g. "Qwen2VLVideoProcessor requires the
    Torchvision library"); taking `str(exc).splitlines()[0]` blindly would show nothing. Chained causes are looked at
    too when the exception itself says nothing.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        line = first_informative_line(str(current))
        if line:
            return f"{type(exc).__name__}: {line}" if current is exc else \
                f"{type(exc).__name__} (from {type(current).__name__}): {line}"
        current = current.__cause__ or current.__context__
    return f"{type(exc).__name__} (no message)"


def first_informative_line(text: str) -> str:
    """The first line with a letter or digit in it, stripped; '' when there is none."""
    for line in text.splitlines():
        stripped = line.strip()
        if any(ch.isalnum() for ch in stripped):
            return stripped
    return ""
