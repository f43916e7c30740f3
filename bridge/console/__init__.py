"""The operator's web console: live calls, past calls with their transcripts and latency,
and a browser softphone that calls the agent over the same media stream Twilio uses."""

from bridge.console.router import Console

__all__ = ["Console"]
