"""From the settings to what each call runs with: one `CallConfig` (and Realtime endpoint)
per agent profile, built once at start, chosen per call from its stream's parameters.

This is the one place the settings become a call's config; defaults come from
`bridge.defaults`, which both sides read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from bridge.call_runner import CallSetup
from bridge.core.call_config import CallConfig, Interruptions, SessionSettings
from bridge.profiles import TURN_TAKING, Profile, Profiles
from bridge.realtime.endpoint import RealtimeEndpoint
from bridge.realtime.providers import endpoint_from_settings
from bridge.settings import ConfigError, Settings
from bridge.tool_filler import FillerError, load_filler
from bridge.tools import ToolRegistry, load_tools_module
from bridge.tools.builtins import BUILTIN_NAMES, TRANSFER_CALL
from twiml.answer import INSTRUCTIONS_PARAMETER, PROFILE_PARAMETER, dial

log = logging.getLogger("bridge.call_setup")


def load_tool_registry(settings: Settings) -> ToolRegistry:
    """The operator's tools (TOOLS_MODULE), or none. A module that fails to load stops the
    start: a call must never find a promised tool missing."""
    if not settings.tools_module:
        return ToolRegistry()
    try:
        return ToolRegistry(load_tools_module(settings.tools_module))
    except Exception as exc:  # the operator's code: anything can go wrong importing it
        raise ConfigError([f"TOOLS_MODULE: {exc}"]) from None


def call_config(
    settings: Settings,
    profile: Profile,
    registry: ToolRegistry,
    endpoint: RealtimeEndpoint,
    filler: bytes = b"",
) -> CallConfig:
    """What a call of `profile` runs with: who speaks and how, which tools it has, its
    limits."""
    wanted = set(profile.tools) if profile.tools is not None else None
    builtins = {name for name in settings.builtin_tools if wanted is None or name in wanted}
    if not settings.transfer_targets:
        builtins.discard(TRANSFER_CALL)  # nowhere to transfer to
    # None: every one of the operator's tools.
    operator_tools = None
    if profile.tools is not None:
        operator_tools = [name for name in profile.tools if name not in BUILTIN_NAMES]
    turns = {**{key: getattr(settings, key) for key in TURN_TAKING}, **profile.turn_taking}
    interruptions = Interruptions(turns["interruptions"])
    # confirm: the bridge decides whether the caller's speech stops the answer and gets
    # one, so the session does neither by itself.
    confirm = interruptions is Interruptions.CONFIRM
    return CallConfig(
        audio_format=endpoint.audio_format,
        session=SessionSettings(
            voice=profile.voice,
            instructions=profile.instructions,
            vad_threshold=turns["vad_threshold"],
            vad_prefix_padding_ms=turns["vad_prefix_padding_ms"],
            vad_silence_ms=turns["vad_silence_ms"],
            interrupt_response=settings.vad_interrupt_response and not confirm,
            create_response=not confirm,
            turn_detection=turns["turn_detection"],
            vad_eagerness=turns["vad_eagerness"],
            noise_reduction=turns["noise_reduction"],
            transcription_model=settings.transcription_model,
        ),
        interruptions=interruptions,
        false_interruption_ms=settings.false_interruption_ms,
        backchannels=frozenset(settings.backchannels),
        idle_prompt_s=turns["idle_prompt_s"],
        idle_hangup_s=turns["idle_hangup_s"],
        idle_prompt_instructions=settings.idle_prompt_instructions,
        idle_goodbye_message=settings.idle_goodbye_message,
        tool_filler_ms=settings.tool_filler_ms,
        tool_filler=filler if settings.tool_filler_ms else b"",
        greeting=profile.greeting,
        max_duration_s=settings.max_call_duration_s or None,
        time_limit_message=settings.time_limit_message,
        reconnect_budget_s=settings.reconnect_budget_s,
        session_setup_timeout_s=settings.session_setup_timeout_s,
        rollover_after_s=settings.rollover_after_s,
        tools=registry.specs(operator_tools),
        builtin_tools=frozenset(builtins),
        transfer_twiml={
            name: dial(target, settings.transfer_failed_message)
            for name, target in settings.transfer_targets.items()
        },
        transfer_message=settings.transfer_message,
        keypad_pause_s=settings.keypad_pause_s,
    )


def load_tool_filler(settings: Settings) -> bytes:
    """The sound a slow tool's caller hears (TOOL_FILLER_MS): checked at start, so a
    file that cannot be used stops the start instead of failing calls."""
    if not settings.tool_filler_ms:
        return b""
    try:
        return load_filler(settings.tool_filler_file)
    except FillerError as exc:
        raise ConfigError([f"TOOL_FILLER_FILE: {exc}"]) from None


def call_setup(
    settings: Settings,
    profiles: Profiles,
    registry: ToolRegistry,
    endpoint: RealtimeEndpoint,
    local_agent_url: str | None = None,
    filler: bytes | None = None,
) -> CallSetup:
    """What a call's stream gets once its `start` is admitted: its profile's config and
    endpoint, chosen from the stream's parameters alone, so any replica can serve it.
    Every profile's setup is built here, once, so a bad one fails at start, not mid-call.
    `filler`: the tool filler's sound, if loaded already (`load_tool_filler`)."""
    if filler is None:
        filler = load_tool_filler(settings)
    setups: dict[str, tuple[CallConfig, RealtimeEndpoint]] = {}
    for profile in profiles.all():
        chosen = endpoint
        if profile.model is not None and profile.model != endpoint.model:
            chosen = endpoint_from_settings(settings, local_agent_url, model=profile.model)
        config = call_config(settings, profile, registry, chosen, filler)
        setups[profile.name] = (config, chosen)

    def choose(parameters: Mapping[str, str]) -> tuple[CallConfig, RealtimeEndpoint]:
        name = parameters.get(PROFILE_PARAMETER) or profiles.default.name
        setup = setups.get(name)
        if setup is None:
            # Another replica's profile file, or a changed one: the call still goes on.
            log.warning(
                "call %s: no profile %r here, using the default",
                parameters.get("CallSid", "?"),
                name,
            )
            setup = setups[profiles.default.name]
        config, chosen = setup
        instructions = parameters.get(INSTRUCTIONS_PARAMETER)
        if instructions:
            config = replace(config, session=replace(config.session, instructions=instructions))
        return config, chosen

    return choose
