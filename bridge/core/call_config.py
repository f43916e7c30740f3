"""What one call runs with: its profile's choices, fixed before the call begins.

`bridge.call_setup` builds a `CallConfig` per profile from the settings; the core only
reads it. The limits that protect the bridge rather than shape the call (how many messages
a second, how fast the caller's audio may come) are constants here, not settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bridge import defaults
from bridge.transcode import AudioFormat

DEFAULT_MAX_REPLAY_CHARS = 20_000  # the replay keeps the newest turns within this (~5k tokens)


class Interruptions(StrEnum):
    """What the caller talking over the assistant does (INTERRUPTIONS)."""

    # Clear, truncate and cancel at once.
    IMMEDIATE = "immediate"
    # Silence the assistant at once; resume from the byte the caller stopped hearing if it
    # was a cough or a backchannel, else truncate and answer as IMMEDIATE would have.
    CONFIRM = "confirm"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the Realtime session is asked to be (rendered per dialect by the codec)."""

    voice: str = defaults.VOICE
    instructions: str = ""
    vad_threshold: float = defaults.VAD_THRESHOLD
    vad_prefix_padding_ms: int = defaults.VAD_PREFIX_PADDING_MS
    vad_silence_ms: int = defaults.VAD_SILENCE_MS
    interrupt_response: bool = defaults.VAD_INTERRUPT_RESPONSE
    # False: the session answers only when asked (response.create): the bridge decides
    # whether the caller's speech was a turn (INTERRUPTIONS=confirm).
    create_response: bool = True
    turn_detection: str = defaults.TURN_DETECTION  # server_vad | semantic_vad
    vad_eagerness: str = defaults.VAD_EAGERNESS  # semantic_vad's
    noise_reduction: str = defaults.NOISE_REDUCTION  # near_field | far_field | off
    transcription_model: str | None = None
    # Function tools ({"type": "function", "name", "description", "parameters"}).
    tools: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """What any Media Streams socket may do, admitted or not."""

    # A socket that never sends `start` holds a connection and nothing else (no line: that
    # comes with a valid start): drop it soon. Twilio sends `connected` and `start` at once.
    start_timeout_s: float = 5.0
    # Twilio sends ~50 media messages a second plus marks; far more is a flood, and the
    # call is ended. Caller audio beyond real time (with slack for network bursts) is
    # dropped: it would only cost tokens.
    max_messages_per_s: float = 200.0
    max_audio_speed: float = 1.5  # x real time, sustained
    audio_burst_s: float = 3.0


@dataclass(frozen=True, slots=True)
class CallConfig:
    # What the session speaks; Twilio's side is always mu-law 8 kHz. (Which dialect of the
    # Realtime protocol carries it is the codec's business: the core never asks.)
    audio_format: AudioFormat = AudioFormat.PCMU
    session: SessionSettings = field(default_factory=SessionSettings)
    greeting: str | None = None
    limits: StreamLimits = field(default_factory=StreamLimits)
    # Caller audio kept while the Realtime session connects (250 frames = 5 s); older
    # frames are dropped first, so a slow backend costs bounded memory.
    max_frames_before_connect: int = 250
    # After this long the assistant says `time_limit_message` and the call is hung up.
    max_duration_s: float | None = None
    time_limit_message: str = defaults.TIME_LIMIT_MESSAGE
    # A goodbye not heard in full by then is cut short: the call ends regardless.
    goodbye_timeout_s: float = 15.0
    # A Realtime socket lost mid-call is reopened with backoff for this long, the
    # conversation restored as text; after that the call ends with the apology. A bound:
    # no attempt is started that could not finish within it.
    reconnect_budget_s: float = defaults.RECONNECT_BUDGET_S
    # A newly opened session must say session.created and then session.updated within
    # this long; one that stays silent (a hung backend) counts as lost.
    session_setup_timeout_s: float = defaults.SESSION_SETUP_TIMEOUT_S
    # Move to a fresh session after this long (the service ends sessions at 60 min on GA,
    # 30 on beta/Azure), at a quiet moment, or regardless `rollover_grace_s` later.
    rollover_after_s: float | None = None
    rollover_grace_s: float = 240.0
    max_replay_chars: int = DEFAULT_MAX_REPLAY_CHARS
    # Tools. `tools`: the operator's, as session.update entries (run outside the core,
    # through RunTool); `builtin_tools`: which of end_call / transfer_call / send_dtmf the
    # model is offered (the core carries them out itself).
    tools: tuple[dict[str, Any], ...] = ()
    builtin_tools: frozenset[str] = frozenset()
    # transfer_call destinations: name -> the TwiML that dials it.
    transfer_twiml: Mapping[str, str] = field(default_factory=dict)
    transfer_message: str = defaults.TRANSFER_MESSAGE
    keypad_pause_s: float = defaults.KEYPAD_PAUSE_S
    # Turn-taking. (A bare CallConfig interrupts at once and never checks in or fills:
    # the settings turn on what a deployment does.)
    interruptions: Interruptions = Interruptions.IMMEDIATE
    false_interruption_ms: int = defaults.FALSE_INTERRUPTION_MS
    backchannels: frozenset[str] = frozenset()  # as `normal_words` writes them
    # The caller heard the whole answer and said nothing for this long: the assistant
    # checks in; `idle_hangup_s` after that, a goodbye and a hang-up. 0: never.
    idle_prompt_s: float = 0.0
    idle_hangup_s: float = 0.0
    idle_prompt_instructions: str = defaults.IDLE_PROMPT_INSTRUCTIONS
    idle_goodbye_message: str = defaults.IDLE_GOODBYE_MESSAGE
    # A tool running this long with the model silent: `tool_filler` (8 kHz mu-law) plays,
    # looped, until the model speaks or the tool returns. 0 or no sound: never.
    tool_filler_ms: int = 0
    tool_filler: bytes = b""
