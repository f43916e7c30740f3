"""Two example tools to try the tool machinery with: TOOLS_MODULE=bridge.tools.examples.

Copy this file as the start of your own module. A handler returns a dict the model reads;
a problem the caller can fix (an unknown order number) is returned as a plain answer, not
raised, so the model can say so naturally and no warning is logged.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.tools.registry import Tool, tool


def _time_zone(name: str) -> tzinfo | None:
    # UTC needs no tz database, which slim container images may lack.
    if name.upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@tool(
    parameters={
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "IANA time zone such as America/New_York or Europe/Paris; "
                "default UTC.",
            }
        },
    }
)
def current_time(arguments: dict[str, Any]) -> dict[str, str]:
    """The current date and time, in a time zone if the caller names a place."""
    name = arguments.get("timezone") or "UTC"
    zone = _time_zone(name) if isinstance(name, str) else None
    if zone is None:
        return {"error": f"unknown time zone {name!r}; use an IANA name such as Europe/Paris"}
    now = datetime.now(zone)
    return {
        "timezone": name,
        "iso": now.isoformat(timespec="seconds"),
        # Spelled out so the model reads it aloud without converting anything.
        "spoken": f"{now:%A, %B} {now.day}, {now.year}, {now.hour % 12 or 12}:{now:%M %p}",
    }


_ORDERS: dict[str, dict[str, str]] = {
    "1001": {"status": "shipped", "carrier": "UPS", "expected_delivery": "in two days"},
    "1002": {"status": "being packed", "expected_shipping": "tomorrow"},
    "1003": {"status": "delivered", "delivered": "last Monday, left at the front door"},
}


@tool(
    parameters={
        "type": "object",
        "properties": {
            "order_number": {
                "type": "string",
                "description": "The order number the caller gave, as digits (e.g. 1001).",
            }
        },
        "required": ["order_number"],
    },
    timeout_s=5,
)
async def lookup_order(arguments: dict[str, Any]) -> dict[str, Any]:
    """Look up the status of a customer's order by its order number."""
    # Async, as a real lookup would await its order system; this one is a dict.
    # Callers read numbers out with spaces, dashes or "number sign".
    order_number = re.sub(r"\D", "", str(arguments.get("order_number", "")))
    order = _ORDERS.get(order_number)
    if order is None:
        return {
            "found": False,
            "order_number": order_number,
            "message": "No order has this number; ask the caller to check it.",
        }
    return {"found": True, "order_number": order_number, **order}


TOOLS: list[Tool] = [current_time, lookup_order]
