"""The defaults of what a call does, in one place.

Two readers share them: the settings (what an operator may change, `bridge.settings`) and
the call core's config (what a call runs with, `bridge.core.call_config`), so a default is
written once and neither layer has to import the other.
"""

from __future__ import annotations

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
TIME_LIMIT_MESSAGE = "We have reached the time limit for this call. Thank you for calling. Goodbye."
TRANSFER_MESSAGE = "Please hold while I transfer your call."
# A Realtime session lost mid-call is retried this long before the apology.
RECONNECT_BUDGET_S = 10.0
# A new Realtime session must be configured within this long.
SESSION_SETUP_TIMEOUT_S = 5.0
# Keypad entry ends on # or after this long without another key.
KEYPAD_PAUSE_S = 2.0
