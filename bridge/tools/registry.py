"""The operator's tools: how they are declared, loaded from TOOLS_MODULE, and run safely.

A tool is a function the model may call mid-conversation. Its handler receives the
arguments the model wrote (a dict) and, if it takes a second parameter, a `ToolContext`
naming the call; it may be sync or async and returns anything JSON can carry::

    from bridge.tools import tool

    @tool(parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    async def weather(arguments, context):
        \"\"\"Today's weather in a city.\"\"\"
        return {"city": arguments.get("city"), "forecast": "sunny"}

    TOOLS = [weather]

`run_tool` never lets a tool break the call: failures, bad arguments and time-outs all
become an `{"error": ...}` output the model can talk about.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import importlib
import inspect
import logging
import math
import re
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, overload

import orjson

from bridge.tools.builtins import BUILTIN_NAMES

log = logging.getLogger("bridge.tools")

# What an OpenAI function name may be.
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# A tool's output goes into the model's context on every later turn; a runaway result
# (a whole web page, a log dump) would crowd out the conversation and cost tokens.
MAX_OUTPUT_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Which call a tool runs for."""

    call_sid: str
    from_number: str
    to_number: str
    profile: str | None = None


# handler(arguments, context) or handler(arguments); either may be async.
Handler = Callable[[dict[str, Any], ToolContext], Any] | Callable[[dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call. Checked when made, so a mistake in TOOLS_MODULE stops
    the bridge at start rather than surfacing mid-call.

    `handler(arguments)` or `handler(arguments, context)`, sync or async: which one is
    read from its signature here, once.
    """

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments (an object schema)
    handler: Handler
    timeout_s: float | None = None  # None: the bridge's TOOL_TIMEOUT_S
    _takes_context: bool = field(init=False, repr=False, compare=False)
    _is_async: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TOOL_NAME.fullmatch(self.name):
            raise ValueError(
                f"tool name {self.name!r} is not allowed: use 1-64 letters, digits, _ or -"
            )
        if not isinstance(self.description, str) or not self.description.strip():
            raise ValueError(
                f"tool {self.name!r} has no description: the model reads it to decide when "
                "to call the tool; write a docstring or pass description="
            )
        _check_object_schema(self.name, self.parameters)
        if self.timeout_s is not None and not (
            isinstance(self.timeout_s, int | float) and 0 < self.timeout_s < math.inf
        ):
            raise ValueError(f"tool {self.name!r}: timeout_s must be a positive number of seconds")
        if not callable(self.handler):
            raise ValueError(f"tool {self.name!r}: the handler is not callable")
        # The schema is copied so that a dict the operator changes later cannot change
        # what the model was told mid-call.
        object.__setattr__(self, "parameters", copy.deepcopy(self.parameters))
        object.__setattr__(self, "_takes_context", _handler_takes_context(self.name, self.handler))
        object.__setattr__(self, "_is_async", _is_async_callable(self.handler))

    def spec(self) -> dict[str, Any]:
        """This tool as a session.update `tools` entry."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),
        }


def _check_object_schema(name: str, parameters: object) -> None:
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        raise ValueError(
            f'tool {name!r}: parameters must be a JSON object schema ({{"type": "object", '
            '"properties": {...}}), as the model always passes arguments as an object'
        )
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict):
        raise ValueError(f"tool {name!r}: parameters.properties must be an object")
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(key, str) for key in required):
        raise ValueError(f"tool {name!r}: parameters.required must be a list of names")
    undeclared = [key for key in required if key not in properties]
    if undeclared:
        raise ValueError(
            f"tool {name!r}: required names {', '.join(undeclared)} are not in properties"
        )


def _handler_takes_context(name: str, handler: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        raise ValueError(
            f"tool {name!r}: cannot read the handler's signature; wrap it in a def "
            "taking (arguments) or (arguments, context)"
        ) from None
    parameters = signature.parameters.values()
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required_positional = [p for p in positional if p.default is inspect.Parameter.empty]
    takes_varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    required_keyword = [
        p
        for p in parameters
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    if required_keyword or len(required_positional) > 2 or not (positional or takes_varargs):
        raise ValueError(
            f"tool {name!r}: the handler must take (arguments) or (arguments, context), "
            f"not {signature}"
        )
    return takes_varargs or len(positional) >= 2


def _is_async_callable(handler: Callable[..., Any]) -> bool:
    # The second test catches an object whose __call__ is async.
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__
    )


def _first_paragraph(text: str | None) -> str:
    paragraph = (text or "").strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split())


@overload
def tool(name: Handler, /) -> Tool: ...


@overload
def tool(
    name: str | None = None,
    *,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    timeout_s: float | None = None,
) -> Callable[[Handler], Tool]: ...


def tool(
    name: str | Handler | None = None,
    *,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    timeout_s: float | None = None,
) -> Tool | Callable[[Handler], Tool]:
    """Make a function a `Tool`: `@tool`, `@tool()` or `@tool("name", parameters=...)`.

    The name defaults to the function's, the description to its docstring's first
    paragraph, the parameters to "no arguments". Raises ValueError for a name OpenAI
    refuses, a missing description or a schema that is not an object schema.
    """
    if callable(name):  # bare @tool
        return tool()(name)

    def decorate(handler: Handler) -> Tool:
        tool_name = name if name is not None else getattr(handler, "__name__", "")
        return Tool(
            name=tool_name,
            description=(
                description
                if description is not None
                else _first_paragraph(inspect.getdoc(handler))
            ),
            parameters=(
                parameters if parameters is not None else {"type": "object", "properties": {}}
            ),
            handler=handler,
            timeout_s=timeout_s,
        )

    return decorate


class ToolRegistry:
    """The operator's tools by name, in the order they were added."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for each in tools:
            self.add(each)

    def add(self, tool: Tool) -> None:
        if tool.name in BUILTIN_NAMES:
            raise ValueError(
                f"tool name {tool.name!r} is taken by a built-in tool "
                f"({', '.join(BUILTIN_NAMES)}); rename yours"
            )
        if tool.name in self._tools:
            raise ValueError(f"two tools are named {tool.name!r}")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self, names: Iterable[str] | None = None) -> tuple[dict[str, Any], ...]:
        """session.update entries for `names` (in that order), or for every tool."""
        if names is None:
            return tuple(each.spec() for each in self._tools.values())
        wanted = list(dict.fromkeys(names))
        unknown = [name for name in wanted if name not in self._tools]
        if unknown:
            known = ", ".join(self._tools) or "none"
            raise ValueError(f"unknown tool(s) {', '.join(unknown)}; the tools are: {known}")
        return tuple(self._tools[name].spec() for name in wanted)

    def __len__(self) -> int:
        return len(self._tools)


def load_tools_module(path: str) -> list[Tool]:
    """The tools named by TOOLS_MODULE: "package.module" (its TOOLS) or
    "package.module:NAME". The attribute is a list or tuple of Tool, or a function
    returning one. Every failure is a ValueError that says what to fix."""
    module_name, _, attribute = path.strip().partition(":")
    attribute = attribute or "TOOLS"
    if not module_name or not attribute.isidentifier():
        raise ValueError(
            f"tools module {path!r} is not of the form package.module or package.module:NAME"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ValueError(
                f"tools module {module_name!r} not found (is it on PYTHONPATH?)"
            ) from exc
        raise ValueError(
            f"importing tools module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    except Exception as exc:
        raise ValueError(
            f"importing tools module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc

    where = f"{module_name}:{attribute}"
    if not hasattr(module, attribute):
        raise ValueError(
            f"tools module {module_name!r} has no attribute {attribute!r} "
            f"(define {attribute} = [...] listing its tools)"
        )
    found = getattr(module, attribute)
    if callable(found) and not isinstance(found, list | tuple | Tool):
        try:
            found = found()
        except Exception as exc:
            raise ValueError(f"calling {where} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(found, list | tuple):
        raise ValueError(f"{where} must be a list or tuple of tools, not {type(found).__name__}")
    for position, item in enumerate(found):
        if not isinstance(item, Tool):
            hint = " (decorate it with @tool)" if callable(item) else ""
            raise ValueError(
                f"{where} item {position} is a {type(item).__name__}, not a Tool{hint}"
            )
    return list(found)


# --- running ---------------------------------------------------------------------------


class ToolError(Exception):
    """Raise it from a tool to tell the model what went wrong, in words it may pass on to
    the caller ("no order with that number"). Other exceptions reach the model only as
    "the tool failed"."""


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _error(message: str) -> str:
    return _json({"error": message})


async def run_tool(
    tool: Tool, arguments: str, context: ToolContext, default_timeout_s: float
) -> str:
    """Run `tool` on `arguments` (the JSON the model wrote) and return the output for
    function_call_output. Never raises, except CancelledError when the call ends.

    Output: a str result as is; None as {"ok": true}; anything else as JSON. Invalid
    arguments, an exception and a time-out become {"error": "..."}. Output over 16 KiB is
    cut, with a marker saying so. Arguments are never logged: they may hold what the
    caller said (names, account numbers).
    """
    extra = {"call_sid": context.call_sid}
    try:
        # A model calling a tool without parameters may send an empty string.
        parsed = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError as exc:
        log.warning("tool %s: the model's arguments are not JSON", tool.name, extra=extra)
        return _error(f"invalid arguments: not JSON ({exc})")
    if not isinstance(parsed, dict):
        log.warning("tool %s: the model's arguments are not an object", tool.name, extra=extra)
        return _error(f"invalid arguments: expected a JSON object, got {_json_type(parsed)}")

    timeout_s = tool.timeout_s if tool.timeout_s is not None else default_timeout_s
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            result = await _call(tool, parsed, context)
    # SystemExit too: a tool calling sys.exit() must not stop the server with every call.
    except (Exception, SystemExit) as exc:
        if isinstance(exc, TimeoutError) and deadline.expired():
            log.warning("tool %s timed out after %g s", tool.name, timeout_s, extra=extra)
            return _error(f"timed out after {timeout_s:g} s")
        log.warning("tool %s failed", tool.name, exc_info=True, extra=extra)
        if isinstance(exc, ToolError):
            return _truncate(_error(str(exc)))
        # Any other exception's text (hosts, queries, internals) is for the log, not for a
        # model that may read it out to the caller: it hears only that the tool failed.
        return _error(f"the tool failed ({type(exc).__name__})")
    return _truncate(_render(tool, result, extra))


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


async def _call(tool: Tool, arguments: dict[str, Any], context: ToolContext) -> Any:
    args = (arguments, context) if tool._takes_context else (arguments,)
    if tool._is_async:
        result = await tool.handler(*args)
    else:
        result = await _in_daemon_thread(tool.name, tool.handler, args)
    # A plain function may still hand back an awaitable (a lambda around a coroutine).
    if inspect.isawaitable(result):
        result = await result
    return result


def _in_daemon_thread(
    name: str, function: Callable[..., Any], args: tuple[Any, ...]
) -> Awaitable[Any]:
    """Run a blocking handler off the event loop, like asyncio.to_thread, but in a daemon
    thread of its own.

    A thread cannot be killed: a handler still running at its time-out is abandoned and
    finishes (or hangs) unseen. In the loop's default executor such a thread would hold
    a worker that DNS lookups also need, and would hold up the loop's shutdown; a daemon
    thread does neither.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def deliver(outcome: Callable[[Any], None], value: Any) -> None:
        if not future.done():  # done: the caller stopped waiting (time-out or hang-up)
            outcome(value)

    def work() -> None:
        try:
            result = context.run(function, *args)
        except BaseException as exc:
            outcome, value = future.set_exception, exc
        else:
            outcome, value = future.set_result, result
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(deliver, outcome, value)

    threading.Thread(target=work, name=f"tool-{name}", daemon=True).start()
    return future


def _render(tool: Tool, result: Any, extra: dict[str, str]) -> str:
    if result is None:
        return _json({"ok": True})
    if isinstance(result, str):
        return result
    try:
        return orjson.dumps(result, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as exc:  # orjson.JSONEncodeError: e.g. a cycle, or an int over 64 bits
        log.warning("tool %s returned a result JSON cannot carry: %s", tool.name, exc, extra=extra)
        return _error(f"the tool's result could not be written as JSON: {exc}")


def _truncate(output: str) -> str:
    encoded = output.encode()
    if len(encoded) <= MAX_OUTPUT_BYTES:
        return output
    marker = f"…[truncated: the tool's output was {len(encoded)} bytes]"
    room = MAX_OUTPUT_BYTES - len(marker.encode())
    # errors="ignore" drops a character the cut split in two.
    return encoded[:room].decode(errors="ignore") + marker
