"""Operator tools: declaring, loading from TOOLS_MODULE, running, and the built-in schemas."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.dtmf import valid_digits
from bridge.tools import (
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    load_tools_module,
    run_tool,
    tool,
)
from bridge.tools.builtins import (
    BUILTIN_NAMES,
    end_call_spec,
    send_dtmf_spec,
    transfer_call_spec,
)
from bridge.tools.examples import current_time, lookup_order
from bridge.tools.registry import MAX_OUTPUT_BYTES

CONTEXT = ToolContext(call_sid="CA123", from_number="+15550001111", to_number="+15550002222")
NO_ARGUMENTS = {"type": "object", "properties": {}}


def make_tool(handler: Callable[..., Any], **kwargs: Any) -> Tool:
    return tool("probe", description="A test tool.", **kwargs)(handler)


async def run(a_tool: Tool, arguments: str = "{}", default_timeout_s: float = 5.0) -> Any:
    """The tool's output, decoded when it is JSON."""
    output = await run_tool(a_tool, arguments, CONTEXT, default_timeout_s)
    try:
        return orjson.loads(output)
    except orjson.JSONDecodeError:
        return output


# --- declaring --------------------------------------------------------------------------


def test_decorator_takes_name_and_description_from_the_function() -> None:
    @tool()
    def check_balance(arguments: dict[str, Any]) -> None:
        """Tell the caller their account
        balance.

        Details for maintainers that the model need not read.
        """

    assert check_balance.name == "check_balance"
    assert check_balance.description == "Tell the caller their account balance."
    assert check_balance.parameters == NO_ARGUMENTS
    assert check_balance.timeout_s is None


def test_bare_decorator_works_too() -> None:
    @tool
    def ping(arguments: dict[str, Any]) -> str:
        """Check the line."""
        return "pong"

    assert isinstance(ping, Tool)
    assert ping.name == "ping"


def test_explicit_settings_win_and_spec_is_what_session_update_wants() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

    @tool("get-weather", description="Weather in a city.", parameters=schema, timeout_s=2.5)
    def handler(arguments: dict[str, Any]) -> None:
        """Not this."""

    assert handler.timeout_s == 2.5
    assert handler.spec() == {
        "type": "function",
        "name": "get-weather",
        "description": "Weather in a city.",
        "parameters": schema,
    }
    # What the model was told cannot change behind the tool's back.
    schema["properties"]["city"]["type"] = "number"
    handler.spec()["parameters"]["required"].append("country")
    assert handler.spec()["parameters"] == {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }


@pytest.mark.parametrize("name", ["has space", "x" * 65, "", "dotted.name", "newline\n"])
def test_names_openai_refuses_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="tool name"):
        tool(name, description="d")(lambda arguments: None)


def test_the_longest_allowed_name_is_accepted() -> None:
    assert make_tool(lambda arguments: None).name == "probe"
    assert tool("a" * 64, description="d")(lambda arguments: None).name == "a" * 64


@pytest.mark.parametrize(
    ("parameters", "problem"),
    [
        ({"type": "array"}, "object schema"),
        ([], "object schema"),
        ({"type": "object", "properties": []}, "properties"),
        ({"type": "object", "properties": {}, "required": ["who"]}, "who"),
    ],
)
def test_parameters_must_be_an_object_schema(parameters: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make_tool(lambda arguments: None, parameters=parameters)


def test_a_tool_without_description_is_refused() -> None:
    def undocumented(arguments: dict[str, Any]) -> None:
        pass

    with pytest.raises(ValueError, match="no description"):
        tool()(undocumented)


@pytest.mark.parametrize("timeout_s", [0, -1, float("inf")])
def test_timeout_must_be_positive(timeout_s: float) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        make_tool(lambda arguments: None, timeout_s=timeout_s)


@pytest.mark.parametrize(
    "handler", [lambda: None, lambda a, b, c: None, lambda arguments, *, key: None]
)
def test_handler_must_take_arguments_or_arguments_and_context(handler: Any) -> None:
    with pytest.raises(ValueError, match=r"\(arguments\) or \(arguments, context\)"):
        make_tool(handler)


# --- registry ---------------------------------------------------------------------------


def named(name: str) -> Tool:
    return tool(name, description=f"The {name} tool.")(lambda arguments: None)


def test_registry_keeps_tools_in_order() -> None:
    registry = ToolRegistry([named("b"), named("a")])
    registry.add(named("c"))
    assert registry.names() == ["b", "a", "c"]
    assert len(registry) == 3
    assert registry.get("a") is not None and registry.get("a").name == "a"
    assert registry.get("missing") is None
    assert [spec["name"] for spec in registry.specs()] == ["b", "a", "c"]
    assert [spec["name"] for spec in registry.specs(["c", "b"])] == ["c", "b"]


def test_registry_refuses_duplicate_names() -> None:
    registry = ToolRegistry([named("lookup")])
    with pytest.raises(ValueError, match="two tools are named 'lookup'"):
        registry.add(named("lookup"))


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_registry_refuses_built_in_names(name: str) -> None:
    with pytest.raises(ValueError, match="built-in"):
        ToolRegistry([named(name)])


def test_specs_for_unknown_names_lists_them() -> None:
    registry = ToolRegistry([named("a")])
    with pytest.raises(ValueError, match="unknown tool\\(s\\) nope, nada"):
        registry.specs(["a", "nope", "nada"])


# --- loading TOOLS_MODULE ---------------------------------------------------------------


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a module of the given source on sys.path; returns its (unique) name."""
    written: list[str] = []

    def write(source: str) -> str:
        name = f"operator_tools_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(source)
        written.append(name)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for name in written:
        sys.modules.pop(name, None)


TOOLS_SOURCE = """
from bridge.tools import tool

@tool
def greet(arguments):
    '''Say hello.'''
    return "hello"

@tool
def wave(arguments, context):
    '''Wave.'''

TOOLS = [greet, wave]
EXTRA = (wave,)

def make_tools():
    return [greet]
"""


def test_loads_tools_from_the_module_tools_list(write_module: Callable[[str], str]) -> None:
    name = write_module(TOOLS_SOURCE)
    assert [each.name for each in load_tools_module(name)] == ["greet", "wave"]


def test_loads_a_named_attribute_or_factory(write_module: Callable[[str], str]) -> None:
    name = write_module(TOOLS_SOURCE)
    assert [each.name for each in load_tools_module(f"{name}:EXTRA")] == ["wave"]
    assert [each.name for each in load_tools_module(f"{name}:make_tools")] == ["greet"]


def test_a_missing_module_is_named() -> None:
    with pytest.raises(ValueError, match="'no_such_tools_module' not found"):
        load_tools_module("no_such_tools_module")


def test_a_missing_dependency_is_not_mistaken_for_a_missing_module(
    write_module: Callable[[str], str],
) -> None:
    name = write_module("import some_absent_dependency\n")
    with pytest.raises(ValueError, match=r"failed: ModuleNotFoundError.*some_absent_dependency"):
        load_tools_module(name)


def test_a_missing_attribute_is_named(write_module: Callable[[str], str]) -> None:
    name = write_module("OTHER = []\n")
    with pytest.raises(ValueError, match="no attribute 'TOOLS'"):
        load_tools_module(name)
    with pytest.raises(ValueError, match="no attribute 'MINE'"):
        load_tools_module(f"{name}:MINE")


def test_an_item_that_is_not_a_tool_is_pointed_out(write_module: Callable[[str], str]) -> None:
    name = write_module(TOOLS_SOURCE + "\ndef plain(arguments): pass\nBAD = [greet, plain]\n")
    with pytest.raises(ValueError, match=r":BAD item 1 is a function, not a Tool \(decorate"):
        load_tools_module(f"{name}:BAD")


def test_an_attribute_that_is_not_a_list_is_refused(write_module: Callable[[str], str]) -> None:
    name = write_module("TOOLS = {'a': 1}\n")
    with pytest.raises(ValueError, match="list or tuple of tools, not dict"):
        load_tools_module(name)


def test_an_error_while_importing_is_reported(write_module: Callable[[str], str]) -> None:
    name = write_module("raise RuntimeError('database is down')\n")
    with pytest.raises(
        ValueError, match=f"importing tools module '{name}' failed: RuntimeError: database is down"
    ):
        load_tools_module(name)


# --- running ----------------------------------------------------------------------------


async def test_sync_handler_with_arguments_only() -> None:
    def add(arguments: dict[str, Any]) -> dict[str, int]:
        return {"sum": arguments["a"] + arguments["b"]}

    assert await run(make_tool(add), '{"a": 2, "b": 3}') == {"sum": 5}


async def test_async_handler_gets_the_call_context() -> None:
    async def who(arguments: dict[str, Any], context: ToolContext) -> str:
        return f"{context.call_sid} from {context.from_number}"

    assert await run(make_tool(who)) == "CA123 from +15550001111"


async def test_sync_handler_gets_the_call_context() -> None:
    def who(arguments: dict[str, Any], context: ToolContext) -> dict[str, str]:
        return {"to": context.to_number}

    assert await run(make_tool(who)) == {"to": "+15550002222"}


async def test_a_string_result_is_passed_on_as_is() -> None:
    output = await run_tool(make_tool(lambda arguments: "plain text"), "{}", CONTEXT, 5.0)
    assert output == "plain text"


async def test_no_result_means_ok() -> None:
    assert await run(make_tool(lambda arguments: None)) == {"ok": True}


async def test_values_json_lacks_are_written_as_text() -> None:
    result = await run(make_tool(lambda arguments: {"price": Decimal("9.50"), 3: "three"}))
    assert result == {"price": "9.50", "3": "three"}


async def test_empty_arguments_mean_none() -> None:
    assert await run(make_tool(lambda arguments: {"got": arguments}), "") == {"got": {}}


@pytest.mark.parametrize(
    ("arguments", "problem"), [("{not json", "not JSON"), ("[1, 2]", "expected a JSON object")]
)
async def test_invalid_arguments_are_reported_without_running_the_tool(
    arguments: str, problem: str
) -> None:
    calls: list[object] = []
    result = await run(make_tool(calls.append), arguments)
    assert result["error"].startswith("invalid arguments")
    assert problem in result["error"]
    assert calls == []


async def test_a_failing_tool_reports_the_error_and_logs_without_the_arguments(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def charge(arguments: dict[str, Any]) -> None:
        raise ValueError("db-7.internal refused user svc_payments")

    caplog.set_level(logging.WARNING, logger="bridge.tools")
    result = await run(make_tool(charge), '{"card_number": "4111222233334444"}')
    # The model (and so the caller) hears that it failed, not the internals.
    assert result == {"error": "the tool failed (ValueError)"}
    assert "db-7.internal" in caplog.text  # the operator gets the details
    [record] = [r for r in caplog.records if r.name == "bridge.tools"]
    assert record.levelno == logging.WARNING
    assert record.exc_info is not None  # the traceback, for the operator
    assert record.call_sid == "CA123"
    assert "probe" in record.getMessage()
    assert "4111222233334444" not in caplog.text


async def test_a_tool_raising_its_own_timeout_error_is_not_a_time_out() -> None:
    async def flaky(arguments: dict[str, Any]) -> None:
        raise TimeoutError("upstream API did not answer")

    assert await run(make_tool(flaky)) == {"error": "the tool failed (TimeoutError)"}


async def test_a_tool_error_is_passed_to_the_model_in_its_own_words() -> None:
    def lookup(arguments: dict[str, Any]) -> None:
        raise ToolError("no order with that number")

    assert await run(make_tool(lookup)) == {"error": "no order with that number"}


async def test_a_slow_async_tool_is_cancelled_at_its_time_limit() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(arguments: dict[str, Any]) -> str:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "too late"

    async with asyncio.timeout(1):  # "promptly": well before the handler's 10 s
        result = await run(make_tool(slow, timeout_s=0.05))
    assert result == {"error": "timed out after 0.05 s"}
    assert started.is_set() and cancelled.is_set()


async def test_a_blocking_sync_tool_neither_blocks_the_loop_nor_the_answer() -> None:
    release = threading.Event()

    def stuck(arguments: dict[str, Any]) -> str:
        release.wait(5)
        return "too late"

    try:
        # The bridge's default limit applies when the tool sets none. Were the handler
        # run on the event loop, this limit could not fire until it returned.
        async with asyncio.timeout(1):
            result = await run(make_tool(stuck), default_timeout_s=0.05)
    finally:
        release.set()  # let the abandoned thread finish
    assert result == {"error": "timed out after 0.05 s"}


async def test_hanging_up_cancels_a_running_tool() -> None:
    started = asyncio.Event()

    async def slow(arguments: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(run_tool(make_tool(slow), "{}", CONTEXT, 5.0))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_long_output_is_cut_with_a_marker() -> None:
    output = await run_tool(make_tool(lambda arguments: "x" * 100_000), "{}", CONTEXT, 5.0)
    assert len(output.encode()) <= MAX_OUTPUT_BYTES
    assert output.startswith("x" * 1000)
    assert output.endswith("[truncated: the tool's output was 100000 bytes]")


async def test_cutting_never_splits_a_character() -> None:
    output = await run_tool(make_tool(lambda arguments: "é" * 20_000), "{}", CONTEXT, 5.0)
    assert len(output.encode()) <= MAX_OUTPUT_BYTES
    assert set(output.split("…")[0]) == {"é"}


# --- built-in tools ---------------------------------------------------------------------


def test_end_call_takes_no_arguments_and_asks_for_a_goodbye_first() -> None:
    spec = end_call_spec()
    assert spec["type"] == "function" and spec["name"] == "end_call"
    assert spec["parameters"] == NO_ARGUMENTS
    assert "goodbye" in spec["description"].lower()


def test_transfer_call_offers_exactly_the_configured_destinations() -> None:
    spec = transfer_call_spec(["sales", "support"])
    assert spec["name"] == "transfer_call"
    assert spec["parameters"]["properties"]["destination"]["enum"] == ["sales", "support"]
    assert spec["parameters"]["required"] == ["destination"]
    with pytest.raises(ValueError, match="at least one destination"):
        transfer_call_spec([])


def test_send_dtmf_pattern_accepts_only_playable_keys() -> None:
    spec = send_dtmf_spec()
    assert spec["name"] == "send_dtmf"
    pattern = re.compile(spec["parameters"]["properties"]["digits"]["pattern"])
    for digits in ("123#w", "0*#ABCD9", "w1w"):
        assert pattern.search(digits) and valid_digits(digits)
    for digits in ("x", "", "12 3", "1e"):
        assert not pattern.search(digits)


# --- example tools ----------------------------------------------------------------------


async def test_current_time_in_utc() -> None:
    result = await run(current_time, '{"timezone": "UTC"}')
    reported = datetime.fromisoformat(result["iso"])
    assert reported.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - reported).total_seconds()) < 5
    assert str(reported.year) in result["spoken"]


async def test_current_time_in_an_unknown_zone_is_an_error() -> None:
    result = await run(current_time, '{"timezone": "Mars/Olympus_Mons"}')
    assert "unknown time zone" in result["error"]


async def test_lookup_order_finds_known_orders_only() -> None:
    found = await run(lookup_order, '{"order_number": "10-01"}')
    assert found["found"] is True and found["status"] == "shipped"
    missing = await run(lookup_order, '{"order_number": "9999"}')
    assert missing["found"] is False


def test_example_module_loads_as_tools_module() -> None:
    registry = ToolRegistry(load_tools_module("bridge.tools.examples"))
    assert registry.names() == ["current_time", "lookup_order"]


async def test_a_tool_calling_sys_exit_fails_alone() -> None:
    async def quit_(arguments: dict[str, Any]) -> None:
        raise SystemExit(1)

    assert await run(make_tool(quit_)) == {"error": "the tool failed (SystemExit)"}
