"""Operator tools for the integration tests (TOOLS_MODULE=tests.helpers.tools_for_tests)."""

from __future__ import annotations

import asyncio

from bridge.tools import tool


@tool
def explode(arguments: dict) -> str:
    """Always fails, as a tool with a bug would."""
    raise RuntimeError("the order database is down")


@tool(timeout_s=0.3)
async def dawdle(arguments: dict) -> str:
    """Never answers in time, as a tool behind a hung service would."""
    await asyncio.sleep(30)
    return "too late"


@tool
def order_status(arguments: dict) -> dict:
    """The status of an order."""
    return {"order": arguments.get("order"), "status": "shipped"}


TOOLS = [explode, dawdle, order_status]


# Set by slow_lookup, so a test can see it start and be cancelled with the call.
slow_lookup_started = asyncio.Event()
slow_lookup_cancelled = asyncio.Event()


@tool(timeout_s=30)
async def slow_lookup(arguments: dict) -> str:
    """Takes longer than the caller will wait."""
    slow_lookup_started.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        slow_lookup_cancelled.set()
        raise
    return "too late"


TOOLS.append(slow_lookup)


@tool(timeout_s=10)
async def lookup_slowly(arguments: dict) -> dict:
    """Answers after 1.5 s: long enough for the filler (TOOL_FILLER_MS) to play."""
    await asyncio.sleep(1.5)
    return {"found": True}


TOOLS.append(lookup_slowly)
