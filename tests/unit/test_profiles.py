"""Agent profiles: the file an operator writes, what each call gets from it, and every
mistake in it reported on one line naming the file, the profile and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.app import create_app
from bridge.call_setup import call_config, call_setup
from bridge.core.call_config import Interruptions
from bridge.profiles import Profile, Profiles
from bridge.realtime.providers import endpoint_from_settings
from bridge.settings import ConfigError, Settings, load_settings
from bridge.tools import ToolRegistry, load_tools_module

SETTINGS_INSTRUCTIONS = "You answer the phone for Acme."
TURN_TAKING_FIELDS = (
    "interruptions, turn_detection, vad_eagerness, vad_threshold, vad_prefix_padding_ms, "
    "vad_silence_ms, noise_reduction, idle_prompt_s, idle_hangup_s"
)


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "_env_file": None,
        "instructions": SETTINGS_INSTRUCTIONS,
        "voice": "marin",
        "greeting": "Hello from the settings.",
        "openai_api_key": "sk-test",
        "allow_unsigned_twilio": True,
        "profiles_file": None,
        "tools_module": None,
    }
    values.update(overrides)
    return load_settings(**values)


def write(tmp_path: Path, text: str, name: str = "profiles.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str) -> Profiles:
    return Profiles.load(write(tmp_path, text), settings())


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    return raised.value.problems


# --- loading and choosing ------------------------------------------------------------------


def test_without_a_file_the_one_profile_is_the_settings() -> None:
    profiles = Profiles.from_settings(settings())
    assert profiles.names() == ("default",)
    assert profiles.for_number("+15551230000") == Profile(
        "default", SETTINGS_INSTRUCTIONS, "marin", "Hello from the settings.", None, None
    )


def test_profiles_inherit_from_default_which_inherits_from_the_settings(tmp_path: Path) -> None:
    profiles = load(
        tmp_path,
        """
        [default]
        voice = "cedar"
        tools = ["end_call", "lookup_order"]

        [profiles.sales]
        numbers = ["+15551230000", "+15551230001"]
        instructions = "You sell anvils."
        model = "gpt-realtime-mini"

        [profiles.support]
        numbers = ["+15551239999"]
        greeting = ""
        voice = "sage"
        """,
    )
    assert profiles.names() == ("default", "sales", "support")
    assert profiles.default == Profile(
        "default",
        SETTINGS_INSTRUCTIONS,
        "cedar",
        "Hello from the settings.",
        ("end_call", "lookup_order"),
        None,
    )
    assert profiles.get("sales") == Profile(
        "sales",
        "You sell anvils.",
        "cedar",
        "Hello from the settings.",
        ("end_call", "lookup_order"),
        "gpt-realtime-mini",
        ("+15551230000", "+15551230001"),
    )
    support = profiles.get("support")
    assert support is not None
    # An empty greeting turns the inherited one off.
    assert (support.voice, support.greeting, support.instructions) == (
        "sage",
        None,
        SETTINGS_INSTRUCTIONS,
    )


def test_the_called_number_chooses_the_profile_and_any_other_gets_the_default(
    tmp_path: Path,
) -> None:
    profiles = load(
        tmp_path,
        """
        [profiles.sales]
        numbers = ["+15551230000"]
        instructions = "You sell anvils."
        """,
    )
    assert profiles.for_number("+15551230000").name == "sales"
    assert profiles.for_number("+15559999999").name == "default"
    assert profiles.for_number("").name == "default"
    assert profiles.get("default") is profiles.default
    assert profiles.get("nobody") is None


def test_each_profile_records_its_calls_as_it_says_else_as_recording_says(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "[profiles.sales]\nrecording = 'bridge'\n"
        "[profiles.support]\nrecording = 'off'\n"
        "[profiles.billing]\ninstructions = 'Bill.'\n",
    )
    loaded = Profiles.load(path, settings(recording="twilio", public_url="https://x.example",
                                          twilio_auth_token="t" * 32))  # fmt: skip
    assert {p.name: p.recording for p in loaded.all()} == {
        "default": "twilio",
        "sales": "bridge",
        "support": "off",
        "billing": "twilio",
    }
    assert loaded.recording_modes() == {"twilio", "bridge", "off"}
    assert Profiles.from_settings(settings()).default.recording == "off"


def test_unknown_tool_names_are_reported_per_profile(tmp_path: Path) -> None:
    profiles = load(
        tmp_path,
        """
        [default]
        tools = ["end_call"]
        [profiles.sales]
        tools = ["end_call", "lookup_ordr", "fax_it"]
        """,
    )
    assert profiles.unknown_tools(["end_call", "lookup_order"]) == [
        f"PROFILES_FILE {tmp_path / 'profiles.toml'}: [profiles.sales] tools: no tool named "
        "lookup_ordr, fax_it; the tools are end_call, lookup_order"
    ]


# --- every mistake, one line each ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[defaults]\nvoice = 'ash'",
            "unknown table or key 'defaults'; expected [default] and [profiles.<name>]",
        ),
        (
            "[default]\nnumbers = ['+15551230000']",
            "[default]: unknown field 'numbers'; the fields are instructions, voice, greeting, "
            "tools, model, recording, recording_notice, " + TURN_TAKING_FIELDS,
        ),
        (
            "[profiles.sales]\ninstruction = 'Sell.'",
            "[profiles.sales]: unknown field 'instruction'; the fields are numbers, "
            "instructions, voice, greeting, tools, model, recording, recording_notice, "
            + TURN_TAKING_FIELDS,
        ),
        ("[profiles.sales]\nvoice = 3", "[profiles.sales] voice: must be a string, not a number"),
        (
            "[profiles.sales]\nrecording = 'always'",
            "[profiles.sales] recording: 'always' is not one of off, bridge, twilio",
        ),
        (
            "[default]\nrecording = 'twilio'",
            "[default] recording: twilio needs TWILIO_AUTH_TOKEN and PUBLIC_URL (to ask Twilio to "
            "record, and for its signed callback to reach this bridge)",
        ),
        (
            "[profiles.sales]\nvoice = 'robot'",
            "[profiles.sales] voice: 'robot' is not a voice; the voices are alloy, ash, ballad, "
            "coral, echo, sage, shimmer, verse, marin, cedar",
        ),
        (
            "[default]\ntools = 'end_call'",
            "[default] tools: must be a list of non-empty strings",
        ),
        ("[default]\ninstructions = '  '", "[default] instructions: must not be empty"),
        (
            "[profiles.sales]\nnumbers = ['5551230000', '+15551230000']",
            "[profiles.sales] numbers: 5551230000 not in E.164 form (+ and the country code, "
            "e.g. +15551230000)",
        ),
        (
            "[profiles.sales]\nnumbers = ['+15551230000']\n"
            "[profiles.support]\nnumbers = ['+15551230000']",
            "[profiles.support] numbers: +15551230000 already selects [profiles.sales]; a "
            "number selects one profile",
        ),
        (
            "[profiles.default]\nvoice = 'ash'",
            "[profiles.default] is reserved; use the [default] table",
        ),
        (
            "[profiles.'sales team']\nvoice = 'ash'",
            "[profiles.sales team]: a profile name is letters, digits, '_', '-' and '.' (up "
            "to 64, starting with a letter or digit)",
        ),
        ("profiles = 3", "'profiles' must hold tables ([profiles.<name>])"),
    ],
    ids=[
        "unknown-table",
        "numbers-in-default",
        "unknown-field",
        "wrong-type",
        "unknown-recording",
        "twilio-recording-without-a-public-url",
        "unknown-voice",
        "tools-not-a-list",
        "empty-instructions",
        "not-e164",
        "number-in-two-profiles",
        "reserved-name",
        "bad-name",
        "profiles-not-tables",
    ],
)
def test_each_mistake_is_one_line_naming_file_profile_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert problems(tmp_path, text) == [f"PROFILES_FILE {tmp_path / 'profiles.toml'}: {expected}"]


def test_all_mistakes_are_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        [default]
        voice = "robot"
        [profiles.sales]
        model = 5
        colour = "red"
        """,
    )
    assert len(found) == 3
    assert [line.split(": ", 2)[1] for line in found] == [
        "[default] voice",
        "[profiles.sales]",
        "[profiles.sales] model",
    ]


def test_an_unreadable_or_malformed_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as raised:
        Profiles.load(missing, settings())
    assert raised.value.problems == [
        f"PROFILES_FILE {missing}: cannot read it (No such file or directory)"
    ]

    broken = write(tmp_path, "[default\nvoice = 'ash'")
    with pytest.raises(ConfigError) as raised:
        Profiles.load(broken, settings())
    [line] = raised.value.problems
    assert line.startswith(f"PROFILES_FILE {broken}: not valid TOML (")
    assert "line 1" in line

    yaml = write(tmp_path, "default:\n  voice: ash\n", "profiles.yaml")
    with pytest.raises(ConfigError) as raised:
        Profiles.load(yaml, settings())
    assert raised.value.problems == [
        f"PROFILES_FILE {yaml}: only TOML profile files are supported (.toml)"
    ]


# --- what a call gets from its profile -----------------------------------------------------


def examples() -> ToolRegistry:
    return ToolRegistry(load_tools_module("bridge.tools.examples"))


def test_each_profile_takes_turns_its_own_way_and_the_session_is_asked_accordingly(
    tmp_path: Path,
) -> None:
    config = settings(interruptions="confirm", vad_silence_ms=600, idle_prompt_s=8)
    profiles = load(
        tmp_path,
        """
        [profiles.kiosk]
        interruptions = "immediate"
        turn_detection = "semantic_vad"
        vad_eagerness = "low"
        noise_reduction = "far_field"
        idle_prompt_s = 0
        """,
    )
    endpoint = endpoint_from_settings(config)
    kiosk = profiles.get("kiosk")
    assert kiosk is not None
    made = call_config(config, kiosk, examples(), endpoint)
    assert made.interruptions is Interruptions.IMMEDIATE and made.idle_prompt_s == 0
    session = made.session
    assert (session.turn_detection, session.vad_eagerness) == ("semantic_vad", "low")
    assert session.noise_reduction == "far_field"
    # Immediate: the session interrupts and answers by itself, as it always did.
    assert session.interrupt_response and session.create_response
    default = call_config(config, profiles.default, examples(), endpoint)
    assert default.interruptions is Interruptions.CONFIRM and default.idle_prompt_s == 8
    # Confirm: the bridge decides both.
    assert not default.session.interrupt_response and not default.session.create_response
    assert default.session.vad_silence_ms == 600


def test_a_profiles_call_config_has_its_voice_words_and_only_its_tools(tmp_path: Path) -> None:
    config = settings(transfer_targets='{"sales": "+15551234567"}', keypad_pause_s=3)
    profiles = load(
        tmp_path,
        """
        [profiles.orders]
        instructions = "You track orders."
        voice = "ash"
        greeting = "Orders desk."
        tools = ["end_call", "transfer_call", "lookup_order"]
        """,
    )
    endpoint = endpoint_from_settings(config)
    orders = profiles.get("orders")
    assert orders is not None
    made = call_config(config, orders, examples(), endpoint)
    assert made.session.instructions == "You track orders."
    assert made.session.voice == "ash"
    assert made.greeting == "Orders desk."
    assert [spec["name"] for spec in made.tools] == ["lookup_order"]
    assert made.builtin_tools == frozenset({"end_call", "transfer_call"})
    assert made.transfer_twiml == {
        "sales": '<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Number>+15551234567'
        "</Number></Dial><Say>Sorry, nobody could take your call right now. Please try again "
        "later. Goodbye.</Say></Response>"
    }
    assert made.keypad_pause_s == 3

    # No list in the profile: every enabled tool, but no transfer without targets.
    everything = call_config(settings(), profiles.default, examples(), endpoint)
    assert [spec["name"] for spec in everything.tools] == ["current_time", "lookup_order"]
    assert everything.builtin_tools == frozenset({"end_call", "send_dtmf"})


def test_the_stream_parameters_alone_rebuild_the_calls_setup(tmp_path: Path) -> None:
    config = settings()
    profiles = load(
        tmp_path,
        """
        [profiles.sales]
        instructions = "You sell anvils."
        model = "gpt-realtime-mini"
        """,
    )
    endpoint = endpoint_from_settings(config)
    choose = call_setup(config, profiles, examples(), endpoint)

    sales_config, sales_endpoint = choose({"Profile": "sales", "CallSid": "CA1"})
    assert sales_config.session.instructions == "You sell anvils."
    assert sales_endpoint.model == "gpt-realtime-mini"
    assert "model=gpt-realtime-mini" in sales_endpoint.url

    own, _ = choose({"Profile": "sales", "Instructions": "Ask about the delivery."})
    assert own.session.instructions == "Ask about the delivery."

    # A name this replica does not know (an older profile file): the default, not a failure.
    fallback, fallback_endpoint = choose({"Profile": "retired"})
    assert fallback.session.instructions == SETTINGS_INSTRUCTIONS
    assert fallback_endpoint is endpoint
    assert choose({})[0] == fallback


def test_the_app_refuses_to_start_on_a_profile_naming_a_missing_tool(tmp_path: Path) -> None:
    path = write(tmp_path, "[default]\ntools = ['end_call', 'lookup_order']")
    with pytest.raises(ConfigError) as raised:
        create_app(settings(profiles_file=str(path)))
    assert raised.value.problems == [
        f"PROFILES_FILE {path}: [default] tools: no tool named lookup_order; the tools are "
        "end_call, send_dtmf, transfer_call"
    ]
    # With the operator's tools loaded, the same file is fine.
    create_app(settings(profiles_file=str(path), tools_module="bridge.tools.examples"))


def test_the_app_refuses_to_start_on_a_tools_module_that_does_not_load() -> None:
    with pytest.raises(ConfigError) as raised:
        create_app(settings(tools_module="no_such_package.tools"))
    assert raised.value.problems == [
        "TOOLS_MODULE: tools module 'no_such_package.tools' not found (is it on PYTHONPATH?)"
    ]
