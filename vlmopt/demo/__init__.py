"""`vlmopt demo`: the whole chain on a tiny offline VLM on this machine."""

from .common import DemoOptions, DemoSummary
from .runner import run_demo

__all__ = ["DemoOptions", "DemoSummary", "run_demo"]
