"""Call simulator: plays Twilio against a running bridge, so it can be tested without a phone.

`simulate_call` posts the voice webhook, opens the `<Connect><Stream>` WebSocket, speaks the
caller's turns at real-time pace (or presses keypad keys, as Twilio `dtmf` messages), plays
the bridge's audio back exactly as Twilio would (marks, clear) and returns a `CallReport` of
what the caller heard and when, and who ended the call.
"""

from bridge.simulator.caller import simulate_call
from bridge.simulator.command import main
from bridge.simulator.playout import Playback, parse_mark_name
from bridge.simulator.report import CallReport, HeardAudio, TurnReport, format_report
from bridge.simulator.simulator_options import SimulatorError, SimulatorOptions
from bridge.simulator.twiml_client import StreamTarget, parse_twiml

__all__ = [
    "CallReport",
    "HeardAudio",
    "Playback",
    "SimulatorError",
    "SimulatorOptions",
    "StreamTarget",
    "TurnReport",
    "format_report",
    "main",
    "parse_mark_name",
    "parse_twiml",
    "simulate_call",
]
