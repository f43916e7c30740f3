"""Tools the model may call: the operator's (TOOLS_MODULE) and the bridge's built-ins."""

from bridge.tools.registry import (
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    load_tools_module,
    run_tool,
    tool,
)

__all__ = [
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "load_tools_module",
    "run_tool",
    "tool",
]
