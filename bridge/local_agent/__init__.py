"""A built-in Realtime-protocol server that echoes the caller's own speech back.

Used by ``phone-bridge serve`` when no OpenAI key is configured, and as the fake backend of the
integration tests. It speaks both the GA and the beta dialect of the OpenAI Realtime API, and
makes function calls when a test plans them (``AgentOptions.function_calls``).
"""

from .agent_options import AgentOptions, FunctionCallPlan
from .responder import AgentResponse
from .server import LocalAgent, run_agent
from .session import AgentSession

__all__ = [
    "AgentOptions",
    "AgentResponse",
    "AgentSession",
    "FunctionCallPlan",
    "LocalAgent",
    "run_agent",
]
