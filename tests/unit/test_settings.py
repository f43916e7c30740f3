"""Settings: defaults, one clear line per problem, secure by default, secrets kept out."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from bridge.realtime.dialects import Dialect
from bridge.realtime.providers import endpoint_from_settings
from bridge.records.store import call_db_problems
from bridge.settings import SECRET_SETTINGS, ConfigError, load_settings
from tests.helpers.settings_env import problems as problems_with

pytestmark = pytest.mark.usefixtures("no_settings_in_env")


def test_defaults_start_on_the_local_agent_without_credentials() -> None:
    settings = load_settings()
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.uses_local_agent
    assert settings.dialect is Dialect.GA
    assert not settings.verifies_signatures


def test_every_problem_is_reported_on_its_own_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "eighty")
    monkeypatch.setenv("REALTIME_DIALECT", "v2")
    monkeypatch.setenv("PUBLIC_URL", "ftp://bridge.example.com")
    monkeypatch.setenv("REALTIME_URL", "https://api.openai.com/v1/realtime")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    problems = caught.value.problems
    assert len(problems) == 4
    assert any(p.startswith("PORT:") and "'eighty'" in p for p in problems)
    assert any(p.startswith("REALTIME_DIALECT:") for p in problems)
    assert any(p.startswith("PUBLIC_URL:") and "http(s)" in p for p in problems)
    assert any(p.startswith("REALTIME_URL:") and "ws" in p for p in problems)


def test_turn_taking_settings_are_checked_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERRUPTIONS", "sometimes")
    monkeypatch.setenv("FALSE_INTERRUPTION_MS", "50")
    monkeypatch.setenv("NOISE_REDUCTION", "loud")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    named = sorted(p.split(":", 1)[0] for p in caught.value.problems)
    assert named == ["FALSE_INTERRUPTION_MS", "INTERRUPTIONS", "NOISE_REDUCTION"]
    monkeypatch.delenv("INTERRUPTIONS")
    monkeypatch.delenv("FALSE_INTERRUPTION_MS")
    monkeypatch.delenv("NOISE_REDUCTION")
    monkeypatch.setenv("BACKCHANNELS", "Mm-hmm., Right!,  ,Got it")
    assert load_settings().backchannels == ["mm hmm", "right", "got it"]


def test_a_filler_file_that_cannot_be_read_stops_the_start_in_one_line(tmp_path: Path) -> None:
    from bridge.app import create_app

    with pytest.raises(ConfigError) as caught:
        create_app(load_settings(_env_file=None, tool_filler_file=str(tmp_path / "nope.wav")))
    [problem] = caught.value.problems
    assert problem.startswith("TOOL_FILLER_FILE: cannot read ") and "No such file" in problem


def test_settings_come_from_a_dotenv_file_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / ".env").write_text("PORT=9090\nVOICE=cedar\n")
    settings = load_settings()
    assert (settings.port, settings.voice) == (9090, "cedar")


def test_a_paid_backend_without_twilio_auth_token_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "TWILIO_AUTH_TOKEN" in str(caught.value)
    assert "sk-test-secret-value" not in str(caught.value)
    monkeypatch.setenv("ALLOW_UNSIGNED_TWILIO", "true")
    assert not load_settings().verifies_signatures
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok")
    assert load_settings().verifies_signatures


def test_secrets_never_show_in_reprs_or_logged_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-secret-value")
    monkeypatch.setenv("REALTIME_URL", "wss://gw.example.com/realtime?token=gw-secret-value")
    settings = load_settings()
    endpoint = endpoint_from_settings(settings)
    for text in [repr(settings), str(settings), repr(endpoint), endpoint.safe_url]:
        for secret in ["sk-test-secret-value", "twilio-secret-value", "gw-secret-value"]:
            assert secret not in text
    assert endpoint.headers["Authorization"] == "Bearer sk-test-secret-value"


@pytest.mark.parametrize("dialect", list(Dialect))
def test_default_endpoint_is_openai_with_the_model_and_dialect_headers(
    monkeypatch: pytest.MonkeyPatch, dialect: Dialect
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok")
    monkeypatch.setenv("OPENAI_MODEL", "gpt-realtime-mini")
    monkeypatch.setenv("REALTIME_DIALECT", dialect.value)
    endpoint = endpoint_from_settings(load_settings())
    assert endpoint.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime-mini"
    assert endpoint.dialect is dialect
    assert ("OpenAI-Beta" in endpoint.headers) == (dialect is Dialect.BETA)


def test_rejected_urls_are_echoed_without_their_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REALTIME_URL", "https://gw.example.com/realtime?token=gw-secret-value")
    monkeypatch.setenv("PUBLIC_URL", "ftp://user:pw-secret-value@bridge.example.com/")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "gw-secret-value" not in text and "pw-secret-value" not in text
    assert "bridge.example.com" in text  # PUBLIC_URL is no secret: its host helps
    assert "gw.example.com" not in text  # REALTIME_URL may be one from end to end


def test_tool_and_transfer_settings_are_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILTIN_TOOLS", "end_call, hang_up")
    monkeypatch.setenv("TRANSFER_TARGETS", '{"sales": "+15551234567", "bad": "555-1234"}')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "BUILTIN_TOOLS: unknown built-in tool(s) hang_up" in text
    assert "TRANSFER_TARGETS: 'bad'" in text and "E.164" in text
    monkeypatch.setenv("BUILTIN_TOOLS", "")
    monkeypatch.setenv("TRANSFER_TARGETS", '{"pbx": " sip:help@pbx.example.com "}')
    settings = load_settings()
    assert settings.builtin_tools == []
    assert settings.transfer_targets == {"pbx": "sip:help@pbx.example.com"}


def test_a_short_operator_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_TOKEN", "letmein")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "OPERATOR_TOKEN: must be at least 24 characters" in str(caught.value)
    assert "letmein" not in str(caught.value)


# A value for every secret setting that contains "marker" and, where the setting has a check
# of its own, fails it. A new secret setting must be added here (the test says so).
SECRET_VALUES = {
    "OPENAI_API_KEY": "sk-marker-value",
    "AZURE_OPENAI_API_KEY": "az-marker-value",
    "TWILIO_AUTH_TOKEN": "tw-marker-value",
    "OPERATOR_TOKEN": "op-marker",
    "METRICS_TOKEN": "mt-marker",
    "CONSOLE_PASSWORD": "cp-marker",
    "POST_CALL_WEBHOOK_SECRET": "whsec_marker!",
    "POST_CALL_WEBHOOK_URL": "http://marker-host.example/calls?token=marker-token",
    "REALTIME_URL": "https://marker-host.example/realtime?token=marker-token",
    "REALTIME_HEADERS": '{"X-Gateway-Key": "marker-header-value", "bad name": "marker-2"}',
    "CALL_DB_URL": "mysql://bridge:marker-password@marker-host.example/calls",
}


def test_every_secret_setting_is_covered_by_the_redaction_test() -> None:
    assert set(SECRET_VALUES) == SECRET_SETTINGS


@pytest.mark.parametrize("name", sorted(SECRET_VALUES))
def test_no_secret_value_is_ever_shown_in_a_config_error(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # PORT: always at least one problem to report
    problems = problems_with(monkeypatch, **{name: SECRET_VALUES[name], "PORT": "abc"})
    assert any(p.startswith("PORT:") for p in problems)
    assert not [p for p in problems if "marker" in p], problems


def test_a_short_console_password_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert problems_with(monkeypatch, CONSOLE_PASSWORD="short") == [
        "CONSOLE_PASSWORD: must be at least 12 characters (a random one: python3 -c "
        "'import secrets; print(secrets.token_urlsafe(32))')"
    ]


def test_problems_across_settings_are_reported_with_the_others_in_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problems = problems_with(
        monkeypatch, OPENAI_API_KEY="sk-test", PORT="abc", REALTIME_HEADERS='{"bad name": "x"}'
    )
    named = [p.partition(":")[0] for p in problems]
    assert named == ["PORT", "REALTIME_HEADERS", "TWILIO_AUTH_TOKEN"], problems


def test_a_setting_rejected_on_its_own_is_not_reported_again_by_a_check_across_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problems = problems_with(
        monkeypatch, AZURE_OPENAI_ENDPOINT="ftp://example.com", AZURE_OPENAI_DEPLOYMENT="rt"
    )
    named = [p.partition(":")[0] for p in problems]
    assert named == ["AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "TWILIO_AUTH_TOKEN"], problems


def test_a_records_database_url_that_cannot_work_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (problem,) = problems_with(monkeypatch, CALL_DB_URL="postgresql://bridge:hunter22@db/x?ssl")
    assert problem.startswith("CALL_DB_URL: ") and "hunter22" not in problem
    monkeypatch.setenv("CALL_DB_URL", " postgresql://bridge:hunter22@db.example.com/calls \n")
    settings = load_settings()
    assert settings.call_db_url == "postgresql://bridge:hunter22@db.example.com/calls"
    assert "hunter22" not in repr(settings)


def test_a_records_file_that_cannot_work_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    (problem,) = problems_with(monkeypatch, CALL_DB_PATH=str(tmp_path / "missing" / "calls.db"))
    assert problem.startswith(f"CALL_DB_PATH: the directory {tmp_path / 'missing'} does not exist")
    assert "CALL_DB_PATH= (empty)" in problem

    (tmp_path / "notes.txt").write_text("not a database")
    (problem,) = problems_with(monkeypatch, CALL_DB_PATH=str(tmp_path / "notes.txt"))
    assert "is not a SQLite database" in problem


def test_a_records_file_that_cannot_work_matters_only_to_serve(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """`call` and `configure-number` keep no records: a bad CALL_DB_PATH is not theirs."""
    monkeypatch.setenv("CALL_DB_PATH", str(tmp_path / "missing" / "calls.db"))
    assert load_settings().call_db_path == str(tmp_path / "missing" / "calls.db")
    problems = problems_with(monkeypatch, serving=True, PORT="abc")
    assert [p.partition(":")[0] for p in problems] == ["PORT", "CALL_DB_PATH"]  # one pass


def test_records_files_that_work_and_no_records_at_all_are_accepted(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CALL_DB_PATH", str(tmp_path / "calls.db"))
    checks = [lambda settings: call_db_problems(settings.call_db_path)]
    assert load_settings(checks=checks).call_db_path == str(tmp_path / "calls.db")
    assert not (tmp_path / "calls.db").exists()  # checking creates nothing
    monkeypatch.setenv("CALL_DB_PATH", "")
    assert load_settings().call_db_path is None


def test_a_post_call_webhook_needs_https_a_real_secret_and_the_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problems = problems_with(
        monkeypatch,
        POST_CALL_WEBHOOK_URL="http://crm.example.com/calls?key=marker-key",
        CALL_DB_PATH="",
    )
    assert problems == [  # (the URL not echoed: it may hold a key)
        "POST_CALL_WEBHOOK_URL: must be https (http only to localhost or 127.0.0.1)",
    ]
    problems = problems_with(
        monkeypatch, POST_CALL_WEBHOOK_URL="https://crm.example.com/calls", CALL_DB_PATH=""
    )
    assert [p.split(":")[0] for p in problems] == [
        "POST_CALL_WEBHOOK_SECRET",
        "POST_CALL_WEBHOOK_URL",
    ]
    short = "whsec_" + base64.b64encode(b"x" * 16).decode()
    assert problems_with(
        monkeypatch,
        POST_CALL_WEBHOOK_URL="https://crm.example.com/calls",
        POST_CALL_WEBHOOK_SECRET=short,
        CALL_DB_PATH="calls.db",
    ) == ["POST_CALL_WEBHOOK_SECRET: must hold at least 24 bytes (whsec_ and 32 or more base64)"]
    good = "whsec_" + base64.b64encode(b"x" * 32).decode()
    for url in ("https://crm.example.com/calls", "http://127.0.0.1:9000/calls"):
        settings = load_settings(
            _env_file=None, post_call_webhook_url=url, post_call_webhook_secret=good
        )
        assert settings.post_call_webhook_url == url


def test_twilio_recording_needs_the_auth_token_and_the_public_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert problems_with(monkeypatch, RECORDING="twilio") == [
        "RECORDING: twilio needs TWILIO_AUTH_TOKEN and PUBLIC_URL (to ask Twilio to record, "
        "and for its signed callback to reach this bridge)"
    ]
    [unknown] = problems_with(monkeypatch, RECORDING="tape")
    assert unknown.startswith("RECORDING: ")
    monkeypatch.delenv("RECORDING")
    settings = load_settings(
        _env_file=None,
        recording="TWILIO",
        twilio_auth_token="token-token-token",
        public_url="https://bridge.example.com",
    )
    assert settings.recording == "twilio"


def test_a_recording_format_is_one_the_bridge_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(_env_file=None).recording_format == "wav"
    [unknown] = problems_with(monkeypatch, RECORDING="bridge", RECORDING_FORMAT="mp3")
    assert unknown.startswith("RECORDING_FORMAT: ") and "'mp3'" in unknown, unknown
    assert all(name in unknown for name in ("'wav'", "'flac'", "'opus'")), unknown
    monkeypatch.setenv("RECORDING_FORMAT", "FLAC")
    assert load_settings(_env_file=None).recording_format == "flac"


def test_recordings_in_object_storage_are_named_by_an_s3_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECORDINGS_URL", "s3://call-audio/phone-bridge/prod")
    monkeypatch.setenv("RECORDINGS_S3_ENDPOINT", "https://abc.r2.cloudflarestorage.com/")
    monkeypatch.setenv("RECORDINGS_S3_REGION", "auto")
    monkeypatch.setenv("RECORDINGS_S3_PATH_STYLE", "true")
    settings = load_settings(_env_file=None)
    assert settings.recordings_url == "s3://call-audio/phone-bridge/prod/"
    assert settings.recordings_s3_endpoint == "https://abc.r2.cloudflarestorage.com"
    assert (settings.recordings_s3_region, settings.recordings_s3_path_style) == ("auto", True)


def test_a_recordings_url_that_cannot_work_is_one_line_each_never_echoing_a_credential(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = problems_with(
        monkeypatch,
        RECORDINGS_URL="s3://AKIAEXAMPLE:wJalrXUtnFEMIexamplekey@call-audio/x",
        RECORDINGS_S3_ENDPOINT="ftp://minio:9000",
        RECORDINGS_S3_REGION="Europe West",
    )
    assert [p.split(":")[0] for p in found] == [
        "RECORDINGS_URL",
        "RECORDINGS_S3_ENDPOINT",
        "RECORDINGS_S3_REGION",
    ]
    assert "credential chain" in found[0]
    assert not any("wJalrXUtnFEMIexamplekey" in p or "AKIAEXAMPLE" in p for p in found), found
    for url, why in (
        ("https://call-audio.s3.amazonaws.com", "must be s3://bucket/prefix"),
        ("s3://Call_Audio!", "is not a bucket name"),
        ("s3://call-audio/../other", "must not hold . or .."),
    ):
        monkeypatch.setenv("RECORDINGS_URL", url)
        monkeypatch.delenv("RECORDINGS_S3_ENDPOINT")
        monkeypatch.delenv("RECORDINGS_S3_REGION")
        [problem] = problems_with(monkeypatch)
        assert problem.startswith("RECORDINGS_URL: ") and why in problem, problem
        monkeypatch.setenv("RECORDINGS_S3_ENDPOINT", "https://x.example")
        monkeypatch.setenv("RECORDINGS_S3_REGION", "auto")


def test_object_storage_settings_without_a_recordings_url_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """They would be ignored, and the recordings land on a disk the operator meant to
    leave."""
    found = problems_with(monkeypatch, RECORDINGS_S3_ENDPOINT="http://minio:9000")
    assert found == [
        "RECORDINGS_S3_ENDPOINT: used only with RECORDINGS_URL (s3://bucket/prefix), which "
        "is not set: recordings would go to RECORDINGS_DIR"
    ]
