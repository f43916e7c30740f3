"""The defaults of what a call does, in one place.

Two readers share them: the settings (what an operator may change, `bridge.settings`) and
the call core's config (what a call runs with, `bridge.core.call_config`), so a default is
written once and neither layer has to import the other.
"""

from __future__ import annotations

from typing import Final

VOICE = "marin"
INSTRUCTIONS = (
    "You are a helpful voice assistant on a phone call. Keep answers short and "
    "conversational, and speak in the caller's language."
)
# Server VAD: how loud speech is, how much audio before it to keep, how long a pause ends
# a turn; and whether the session cancels its own answer when the caller talks.
VAD_THRESHOLD = 0.5
VAD_PREFIX_PADDING_MS = 300
VAD_SILENCE_MS = 500
VAD_INTERRUPT_RESPONSE = True
# How the session detects turns: server_vad (loudness and a pause) or semantic_vad (a model
# judging whether the caller is done; `eagerness` low..high, auto).
TURN_DETECTION: Final = "server_vad"
VAD_EAGERNESS: Final = "auto"
# The service's input noise reduction: near_field (a phone held to the ear), far_field
# (a speakerphone), or off (the service's default).
NOISE_REDUCTION: Final = "off"
# When the caller talks over the assistant: "confirm" stops the audio at once and waits to
# see whether it was a real interruption (resuming from the byte they stopped hearing if
# not); "immediate" truncates and cancels at once.
INTERRUPTIONS: Final = "confirm"
# Caller speech that ends within this long, and whose transcript (if one comes in time) is
# empty or a backchannel, was not an interruption.
FALSE_INTERRUPTION_MS = 600
BACKCHANNELS = (
    "mm-hm",
    "mhm",
    "mm",
    "hm",
    "uh-huh",
    "yeah",
    "yes",
    "yep",
    "ok",
    "okay",
    "right",
    "sure",
    "i see",
    "got it",
    "alright",
)
# The caller has heard the whole answer and said nothing: check in after IDLE_PROMPT_S,
# hang up IDLE_HANGUP_S after that. 0 turns either off.
IDLE_PROMPT_S = 8.0
IDLE_HANGUP_S = 12.0
IDLE_PROMPT_INSTRUCTIONS = (
    "The caller has said nothing for a while. Briefly and warmly check whether they are "
    "still there, in the language of the conversation, in one short sentence."
)
IDLE_GOODBYE_MESSAGE = "It seems you have stepped away. Thank you for calling. Goodbye."
# A tool still running after this long with the model silent: a soft filler plays.
TOOL_FILLER_MS = 800
TIME_LIMIT_MESSAGE = "We have reached the time limit for this call. Thank you for calling. Goodbye."
TRANSFER_MESSAGE = "Please hold while I transfer your call."
# A Realtime session lost mid-call is retried this long before the apology.
RECONNECT_BUDGET_S = 10.0
# A new Realtime session must be configured within this long.
SESSION_SETUP_TIMEOUT_S = 5.0
# Keypad entry ends on # or after this long without another key.
KEYPAD_PAUSE_S = 2.0
