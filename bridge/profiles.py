"""Agent profiles: who the assistant is on a given call.

A profile sets the instructions, voice, greeting, tools and model. Calls pick one by the
number they called (the webhook's `To`), or an outbound call names one. Profiles come from
a TOML file (PROFILES_FILE)::

    [default]                 # optional; what it leaves out comes from the settings
    instructions = "..."
    voice = "marin"
    greeting = "Thanks for calling Acme."
    tools = ["end_call", "transfer_call", "lookup_order"]
    model = "gpt-realtime"
    recording = "bridge"      # off, bridge or twilio (default: RECORDING)

    [profiles.sales]
    numbers = ["+15551230000"]   # called numbers that select it (E.164)
    instructions = "..."         # what it leaves out comes from [default]

Only the chosen profile's *name* travels with the call (a TwiML `<Parameter>`), so every
replica must load the same file: the stream side rebuilds the call's setup from the name.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.settings import ConfigError

if TYPE_CHECKING:
    from bridge.settings import Settings

log = logging.getLogger("bridge.profiles")

DEFAULT_PROFILE = "default"
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
E164 = re.compile(r"\+[1-9]\d{6,14}")
# A name travels in a query string and a TwiML <Parameter>: plain characters keep it
# readable in both, with no escaping to get wrong.
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# How a profile's calls take turns: each key is also a setting (upper case), which is what
# a profile that leaves it out gets. Choices, or a number's (type, least, most).
TURN_TAKING: dict[str, tuple[str, ...] | tuple[type, float, float]] = {
    "interruptions": ("confirm", "immediate"),
    "turn_detection": ("server_vad", "semantic_vad"),
    "vad_eagerness": ("low", "medium", "high", "auto"),
    "vad_threshold": (float, 0.0, 1.0),
    "vad_prefix_padding_ms": (int, 0, 5000),
    "vad_silence_ms": (int, 100, 10000),
    "noise_reduction": ("near_field", "far_field", "off"),
    "idle_prompt_s": (float, 0, 600),
    "idle_hangup_s": (float, 0, 600),
}
_SETTINGS_KEYS = (
    "instructions",
    "voice",
    "greeting",
    "tools",
    "model",
    "recording",
    "recording_notice",
    *TURN_TAKING,
)
RECORDING_MODES = ("off", "bridge", "twilio")
_PROFILE_KEYS = ("numbers", *_SETTINGS_KEYS)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    instructions: str
    voice: str
    greeting: str | None = None
    # None: every enabled tool. Names of built-ins and of the operator's tools.
    tools: tuple[str, ...] | None = None
    # None: the configured model (OPENAI_MODEL, or the Azure deployment).
    model: str | None = None
    numbers: tuple[str, ...] = ()
    # Said by Twilio before the stream connects (consent laws); None: nothing.
    recording_notice: str | None = None
    # Who records its calls: "off", "bridge" (RECORDINGS_DIR) or "twilio".
    recording: str = "off"
    # How its calls take turns: the TURN_TAKING keys its file sets (or its [default]
    # does); the settings' for the others.
    turn_taking: Mapping[str, Any] = field(default_factory=dict)


class Profiles:
    """The profiles of one deployment: a default, and named ones chosen by number or name."""

    def __init__(
        self, default: Profile, named: Iterable[Profile] = (), source: str | None = None
    ) -> None:
        self.default = default
        self.source = source
        self._named = {profile.name: profile for profile in named}
        self._by_number = {n: p for p in self._named.values() for n in p.numbers}

    @classmethod
    def from_settings(cls, settings: Settings) -> Profiles:
        """No profile file: one default profile, straight from the settings."""
        return cls(_settings_default(settings))

    @classmethod
    def load(cls, path: str | Path, settings: Settings) -> Profiles:
        """Read and check a profile file; raise ConfigError with one line per problem."""
        where = f"PROFILES_FILE {path}"
        if Path(path).suffix.lower() in (".yaml", ".yml"):
            raise ConfigError([f"{where}: only TOML profile files are supported (.toml)"])
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except OSError as exc:
            raise ConfigError([f"{where}: cannot read it ({exc.strerror or exc})"]) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{where}: not valid TOML ({exc})"]) from None
        return _parse(document, settings, where, str(path))

    def for_number(self, to: str) -> Profile:
        """The profile for a call to `to` (the webhook's To): the one listing that number,
        else the default."""
        return self._by_number.get(to.strip(), self.default)

    def get(self, name: str) -> Profile | None:
        if name == DEFAULT_PROFILE:
            return self.default
        return self._named.get(name)

    def names(self) -> tuple[str, ...]:
        """Every profile's name, the default first, then in the file's order."""
        return (DEFAULT_PROFILE, *self._named)

    def all(self) -> tuple[Profile, ...]:
        return (self.default, *self._named.values())

    def unknown_tools(self, known: Iterable[str]) -> list[str]:
        """One line per profile naming tools that are neither built-in nor the operator's
        (checked once both are known, when the app starts)."""
        available = set(known)
        where = f"PROFILES_FILE {self.source}" if self.source else "PROFILES_FILE"
        problems = []
        for profile in self.all():
            missing = [t for t in profile.tools or () if t not in available]
            if missing:
                problems.append(
                    f"{where}: {_table(profile.name)} tools: no tool named "
                    + ", ".join(missing)
                    + "; the tools are "
                    + (", ".join(sorted(available)) or "none")
                )
        return problems

    def recording_modes(self) -> set[str]:
        """How the profiles' calls are recorded, all of them ("off" among them or not)."""
        return {profile.recording for profile in self.all()}

    def summary(self) -> str:
        """One line for the log: each profile with the numbers that choose it."""
        parts = []
        for profile in self.all():
            numbers = ", ".join(profile.numbers)
            parts.append(f"{profile.name} ({numbers})" if numbers else profile.name)
        return "; ".join(parts)


def load_profiles(settings: Settings) -> Profiles:
    """PROFILES_FILE if set, else the settings' single default profile."""
    if settings.profiles_file:
        return Profiles.load(settings.profiles_file, settings)
    return Profiles.from_settings(settings)


# --- parsing --------------------------------------------------------------------------------


def _settings_default(settings: Settings) -> Profile:
    return Profile(
        name=DEFAULT_PROFILE,
        instructions=settings.instructions,
        voice=settings.voice,
        greeting=settings.greeting,
        recording_notice=settings.recording_notice,
        recording=settings.recording,
    )


def _table(name: str) -> str:
    return "[default]" if name == DEFAULT_PROFILE else f"[profiles.{name}]"


def _parse(document: dict[str, Any], settings: Settings, where: str, source: str) -> Profiles:
    problems: list[str] = []
    for key in document:
        if key not in (DEFAULT_PROFILE, "profiles"):
            problems.append(
                f"{where}: unknown table or key {key!r}; expected [default] and [profiles.<name>]"
            )
    base = _settings_default(settings)
    default_table = document.get(DEFAULT_PROFILE, {})
    if not isinstance(default_table, dict):
        problems.append(f"{where}: 'default' must be a table ([default])")
        default_table = {}
    default = _profile(
        DEFAULT_PROFILE, default_table, base, _SETTINGS_KEYS, where, problems, settings
    )

    tables = document.get("profiles", {})
    if not isinstance(tables, dict):
        problems.append(f"{where}: 'profiles' must hold tables ([profiles.<name>])")
        tables = {}
    named: list[Profile] = []
    owner_of_number: dict[str, str] = {}
    for name, table in tables.items():
        if name == DEFAULT_PROFILE:
            problems.append(f"{where}: [profiles.default] is reserved; use the [default] table")
            continue
        if not _PROFILE_NAME.fullmatch(name):
            problems.append(
                f"{where}: {_table(name)}: a profile name is letters, digits, '_', '-' and "
                "'.' (up to 64, starting with a letter or digit)"
            )
            continue
        if not isinstance(table, dict):
            problems.append(f"{where}: profiles.{name} must be a table ([profiles.{name}])")
            continue
        profile = _profile(name, table, default, _PROFILE_KEYS, where, problems, settings)
        for number in profile.numbers:
            owner = owner_of_number.setdefault(number, name)
            if owner != name:
                problems.append(
                    f"{where}: [profiles.{name}] numbers: {number} already selects "
                    f"[profiles.{owner}]; a number selects one profile"
                )
        named.append(profile)
    if problems:
        raise ConfigError(problems)
    return Profiles(default, named, source)


def _profile(
    name: str,
    table: Mapping[str, Any],
    inherited: Profile,
    allowed: tuple[str, ...],
    where: str,
    problems: list[str],
    settings: Settings,
) -> Profile:
    """`table` over `inherited`; every problem found is appended to `problems`."""
    at = f"{where}: {_table(name)}"
    before = len(problems)
    for key in table:
        if key not in allowed:
            problems.append(f"{at}: unknown field {key!r}; the fields are {', '.join(allowed)}")
    changes: dict[str, Any] = {"name": name, "numbers": ()}

    def text(key: str) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            problems.append(f"{at} {key}: must be a string, not {_type_name(value)}")
            return None
        return value

    def names(key: str) -> tuple[str, ...] | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            problems.append(f"{at} {key}: must be a list of non-empty strings")
            return None
        return tuple(dict.fromkeys(v.strip() for v in value))

    instructions = text("instructions")
    if instructions is not None:
        if not instructions.strip():
            problems.append(f"{at} instructions: must not be empty")
        changes["instructions"] = instructions
    voice = text("voice")
    if voice is not None:
        if voice not in VOICES:
            problems.append(
                f"{at} voice: {voice!r} is not a voice; the voices are " + ", ".join(VOICES)
            )
        changes["voice"] = voice
    greeting = text("greeting")
    if greeting is not None:
        # TOML has no null: an empty greeting turns off the one the profile inherits.
        changes["greeting"] = greeting.strip() or None
    notice = text("recording_notice")
    if notice is not None:
        changes["recording_notice"] = notice.strip() or None  # empty: none, as the greeting
    recording = text("recording")
    if recording is not None:
        if recording not in RECORDING_MODES:
            problems.append(
                f"{at} recording: {recording!r} is not one of " + ", ".join(RECORDING_MODES)
            )
        elif recording == "twilio" and (lacking := settings.twilio_recording_problem()):
            problems.append(f"{at} recording: {lacking}")
        changes["recording"] = recording
    turn_taking = _turn_taking(table, at, problems)
    if turn_taking:
        changes["turn_taking"] = {**inherited.turn_taking, **turn_taking}
    model = text("model")
    if model is not None:
        if not model.strip():
            problems.append(f"{at} model: must not be empty")
        changes["model"] = model.strip()
    tools = names("tools")
    if tools is not None:
        changes["tools"] = tools
    numbers = names("numbers")
    if numbers is not None:
        bad = [n for n in numbers if not E164.fullmatch(n)]
        if bad:
            problems.append(
                f"{at} numbers: {', '.join(bad)} not in E.164 form (+ and the country code, "
                "e.g. +15551230000)"
            )
        changes["numbers"] = numbers
    if len(problems) > before:
        return replace(inherited, name=name, numbers=())
    return replace(inherited, **changes)


def _turn_taking(table: Mapping[str, Any], at: str, problems: list[str]) -> dict[str, Any]:
    """The turn-taking keys `table` sets, checked; each problem appended to `problems`."""
    found: dict[str, Any] = {}
    for key, rule in TURN_TAKING.items():
        if key not in table:
            continue
        value = table[key]
        if isinstance(rule[0], str):
            if value not in rule:
                problems.append(f"{at} {key}: {value!r} is not one of " + ", ".join(map(str, rule)))
                continue
        else:
            kind, least, most = rule
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"{at} {key}: must be a number, not {_type_name(value)}")
                continue
            if kind is int and value != int(value):
                problems.append(f"{at} {key}: must be a whole number, not {value}")
                continue
            if not least <= value <= most:
                problems.append(f"{at} {key}: {value} is not between {least:g} and {most:g}")
                continue
            value = int(value) if kind is int else float(value)
        found[key] = value
    return found


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
