"""What the Kubernetes and SkyPilot sides of a campaign share: one error type with a one-line message, and the run
states `collect` reports."""

from __future__ import annotations

from typing import Literal

RunState = Literal["submitted", "pending", "running", "succeeded", "failed", "recovering", "gone", "unknown"]
ACTIVE_STATES = ("submitted", "pending", "running", "recovering")


class EngineError(RuntimeError):
    """A cluster or SkyPilot call failed; the message is one line for the user (no credentials, unreachable API
    server, a refused object)."""
