"""`vlmopt demo`: the whole chain on a tiny offline VLM on this machine."""

from .runner import DemoOptions, DemoSummary, run_demo

__all__ = ["DemoOptions", "DemoSummary", "run_demo"]
