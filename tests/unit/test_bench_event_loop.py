"""The benchmark client's event loop: uvloop by default where installed, asyncio on request, bad values refused."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest

from vlmopt.bench import event_loop

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.ENV_VAR, "asyncio")
    assert event_loop.loop_choice() == "asyncio"
    assert event_loop.run(_loop_module()).startswith("asyncio")


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop has no wheel on this platform (a dependency everywhere else)")
def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.ENV_VAR, raising=False)
    assert event_loop.loop_choice() == "uvloop"
    assert event_loop.run(_loop_module()).startswith("uvloop")


def test_without_uvloop_auto_falls_back_and_explicit_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    monkeypatch.setenv(event_loop.ENV_VAR, "auto")
    assert event_loop.loop_choice() == "asyncio"
    monkeypatch.setenv(event_loop.ENV_VAR, "uvloop")
    with pytest.raises(ValueError, match="not installed"):
        event_loop.loop_choice()


def test_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.ENV_VAR, "trio")
    with pytest.raises(ValueError, match="VLMOPT_EVENT_LOOP='trio'"):
        event_loop.loop_choice()
