"""Settings from environment variables (and a `.env` file), checked once at start.

Every problem is reported on its own line, naming the variable, so an operator can fix
them all in one go. Secrets are held as `SecretStr` and never printed.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

import orjson
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bridge import defaults
from bridge.core.interruptions import normal_words
from bridge.object_storage import check_endpoint, check_region, parse_recordings_url
from bridge.realtime import providers
from bridge.realtime.dialects import Dialect
from bridge.tools.builtins import BUILTIN_NAMES
from bridge.transcode import AudioFormat
from bridge.usage import PriceTable, parse_price_overrides

_TRANSFER_TARGET = re.compile(r"\+[1-9]\d{6,14}|sips?:[^\s<>\"']+@[^\s<>\"']+")

DEFAULT_FALLBACK_MESSAGE = (
    "Sorry, the assistant is not available right now. Please try again later."
)


class ConfigError(Exception):
    """Settings that cannot work; `problems` holds one line per variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    host: str = Field("0.0.0.0", description="Interface to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="Port to listen on.")
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies whose X-Forwarded-For is believed for the client's address "
        "(comma-separated addresses or networks, or * where only a proxy can reach the "
        "bridge); the console's login throttle counts per client address.",
    )
    public_url: str | None = Field(
        None,
        description="The https base URL Twilio reaches (for the stream URL and signatures).",
    )
    realtime_provider: Literal["openai", "azure"] | None = Field(
        None, description="Inferred when unset: azure if AZURE_OPENAI_ENDPOINT is set."
    )
    openai_api_key: SecretStr | None = None
    realtime_url: str | None = Field(
        None,
        description="WebSocket URL of the Realtime API or a gateway in front of it, used "
        "as given (?model=OPENAI_MODEL is added if OPENAI_MODEL is set and it names none).",
        repr=False,  # a gateway may take its key as ?token=...
    )
    realtime_dialect: Dialect | None = Field(
        None, description="ga or beta; default ga (beta for Azure's preview API)."
    )
    openai_model: str = "gpt-realtime"
    azure_openai_endpoint: str | None = Field(
        None, description="https://<resource>.openai.azure.com (or a gateway in front of it)."
    )
    azure_openai_api_key: SecretStr | None = None
    azure_openai_deployment: str | None = None
    azure_openai_api_version: str | None = Field(
        None,
        description="Set to use the preview API (/openai/realtime?api-version=...); unset: "
        "the GA API (/openai/v1/realtime).",
    )
    realtime_key_query_param: str | None = Field(
        None,
        description="Send the API key as this query parameter (e.g. token) instead of a "
        "header, for gateways that want it so.",
    )
    realtime_headers: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        repr=False,  # a gateway's own key may be among them
        description='Extra handshake headers, as JSON: {"Session-Id": "{call_sid}"}. '
        "Values may use {call_sid} {account_sid} {stream_sid} {from} {to}.",
    )
    realtime_audio_format: AudioFormat | None = Field(
        None,
        description="pcmu (passthrough), or pcm16 / pcma (the bridge transcodes); default "
        "pcmu for every OpenAI and Azure model, pcm16 for other models behind REALTIME_URL.",
    )
    realtime_prices: str | None = Field(
        None,
        description="Price overrides per model (USD per 1M tokens), as JSON or a JSON "
        "file's path, for the per-call cost estimate.",
    )
    voice: str = defaults.VOICE
    instructions: str = defaults.INSTRUCTIONS
    greeting: str | None = Field(None, description="What the assistant says first, if set.")
    fallback_message: str = Field(
        DEFAULT_FALLBACK_MESSAGE,
        description="What Twilio says if the bridge ends the stream because the AI failed.",
    )
    twilio_auth_token: SecretStr | None = None
    allow_unsigned_twilio: bool = Field(
        False,
        description="Insecure, for local development only: accept requests without a valid "
        "X-Twilio-Signature when no TWILIO_AUTH_TOKEN is set.",
    )
    vad_threshold: float = Field(defaults.VAD_THRESHOLD, ge=0.0, le=1.0)
    vad_prefix_padding_ms: int = Field(defaults.VAD_PREFIX_PADDING_MS, ge=0, le=5000)
    vad_silence_ms: int = Field(defaults.VAD_SILENCE_MS, ge=100, le=10000)
    vad_interrupt_response: bool = Field(
        defaults.VAD_INTERRUPT_RESPONSE,
        description="Let the session cancel its own answer when the caller talks; when "
        "false, the bridge sends response.cancel itself.",
    )
    turn_detection: Literal["server_vad", "semantic_vad"] = Field(
        defaults.TURN_DETECTION,
        description="How the session hears a turn end: server_vad (a pause of "
        "VAD_SILENCE_MS) or semantic_vad (a model judging whether the caller is done, "
        "VAD_EAGERNESS); per profile too.",
    )
    vad_eagerness: Literal["low", "medium", "high", "auto"] = Field(
        defaults.VAD_EAGERNESS,
        description="semantic_vad only: how soon it answers (low waits longest); per profile too.",
    )
    noise_reduction: Literal["near_field", "far_field", "off"] = Field(
        defaults.NOISE_REDUCTION,
        description="The session's input noise reduction: near_field (a phone held to the "
        "ear), far_field (a speakerphone), off; per profile too.",
    )
    interruptions: Literal["confirm", "immediate"] = Field(
        defaults.INTERRUPTIONS,
        description="confirm: the caller talking over the assistant stops its audio at once, "
        "and a cough or an mm-hm resumes it from the very byte they stopped hearing; "
        "immediate: cut and cancel at once. Per profile too.",
    )
    false_interruption_ms: int = Field(
        defaults.FALSE_INTERRUPTION_MS,
        ge=100,
        le=3000,
        description="confirm: caller speech over the assistant that ends within this long "
        "(and whose transcript, if it comes in time, is empty or a backchannel) resumes it.",
    )
    backchannels: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [normal_words(p) for p in defaults.BACKCHANNELS],
        description="confirm: what a caller says to show they listen, not to interrupt, "
        "comma-separated (case and punctuation ignored).",
    )
    idle_prompt_s: float = Field(
        defaults.IDLE_PROMPT_S,
        ge=0,
        le=600,
        description="After the caller has heard the whole answer and said nothing this "
        "long, the assistant checks in; 0: never. Per profile too.",
    )
    idle_hangup_s: float = Field(
        defaults.IDLE_HANGUP_S,
        ge=0,
        le=600,
        description="This long after the check-in, still nothing: a goodbye and a hang-up "
        "(outcome caller_idle); 0: never. Per profile too.",
    )
    idle_prompt_instructions: str = Field(
        defaults.IDLE_PROMPT_INSTRUCTIONS,
        description="What the model is asked to do when the caller has gone quiet.",
    )
    idle_goodbye_message: str = Field(
        defaults.IDLE_GOODBYE_MESSAGE, description="Said before hanging up on a quiet caller."
    )
    tool_filler_ms: int = Field(
        defaults.TOOL_FILLER_MS,
        ge=0,
        le=60_000,
        description="A tool still running after this long, the model silent: a soft filler "
        "sound plays until the model speaks or the tool returns; 0: never.",
    )
    tool_filler_file: str | None = Field(
        None,
        description="The filler: a WAV (any rate, mono or stereo, 8/16-bit) or raw 8 kHz "
        "mu-law (.ulaw); unset: a soft generated sound.",
    )
    transcription_model: str | None = Field(
        "gpt-4o-mini-transcribe",
        description="Transcribes the caller, so a restored session knows both sides; "
        "empty to turn it off.",
    )
    reconnect_budget_s: float = Field(
        defaults.RECONNECT_BUDGET_S,
        ge=0,
        description="How long a lost Realtime session is retried before the apology.",
    )
    session_setup_timeout_s: float = Field(
        defaults.SESSION_SETUP_TIMEOUT_S,
        gt=0,
        le=60,
        description="A new Realtime session that has not sent session.created and "
        "session.updated by then counts as lost (a hung backend).",
    )
    session_rollover_s: float | None = Field(
        None,
        ge=5,
        description="Move to a fresh Realtime session after this long; default 55 min on GA, "
        "25 min on beta (the service ends sessions at 60 / 30 min).",
    )
    max_concurrent_calls: int = Field(
        100, ge=1, description="Calls beyond this hear BUSY_MESSAGE; no AI session is opened."
    )
    max_call_duration_s: float = Field(
        3600, ge=0, description="Then the assistant says TIME_LIMIT_MESSAGE and hangs up; 0: none."
    )
    shutdown_grace_s: float = Field(
        20, ge=0, description="On SIGTERM, how long calls may go on before the goodbye."
    )
    busy_message: str = "Sorry, all our lines are busy right now. Please call again later."
    time_limit_message: str = defaults.TIME_LIMIT_MESSAGE
    shutdown_message: str = (
        "I'm sorry, I have to end our call now for maintenance. Please call back in a "
        "minute. Goodbye."
    )
    # --- telephony actions: tools, transfer, keypad, outbound calls, profiles ---
    twilio_account_sid: str | None = Field(
        None, description="AC...: needed to place outbound calls and configure numbers."
    )
    twilio_phone_number: str | None = Field(
        None, description="The Twilio number outbound calls come from (E.164)."
    )
    operator_token: SecretStr | None = Field(
        None,
        description="Bearer token for POST /calls (outbound calls over HTTP); unset: the "
        "endpoint is off.",
    )
    profiles_file: str | None = Field(
        None, description="TOML file of agent profiles, chosen per called number or call."
    )
    tools_module: str | None = Field(
        None,
        description="Python module (package.module or package.module:NAME) whose TOOLS "
        "list holds the operator's tools.",
    )
    builtin_tools: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(BUILTIN_NAMES),
        description="Built-in tools offered to the model, comma-separated (transfer_call "
        "only with TRANSFER_TARGETS); empty for none.",
    )
    transfer_targets: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description='Where transfer_call may send a call, as JSON: {"sales": "+15551234567", '
        '"support": "sip:help@pbx.example.com"}.',
    )
    transfer_message: str = defaults.TRANSFER_MESSAGE
    transfer_failed_message: str = Field(
        "Sorry, nobody could take your call right now. Please try again later. Goodbye.",
        description="Said when a transfer's destination is busy or does not answer.",
    )
    tool_timeout_s: float = Field(10, gt=0, le=120, description="A tool call's time limit.")
    keypad_pause_s: float = Field(
        defaults.KEYPAD_PAUSE_S,
        gt=0,
        le=30,
        description="Keypad entry ends on # or after this long without a key.",
    )
    machine_message: str | None = Field(
        None,
        description="Outbound calls answered by a machine hear this, then hang up; unset: "
        "hang up at once.",
    )
    # --- observability and the console ---
    call_db_path: str | None = Field(
        "phone-bridge.db",
        description="SQLite file of call records (transcripts, latency, cost); empty: none.",
    )
    call_db_url: str | None = Field(
        None,
        repr=False,  # it holds the database's password
        description="postgresql://user:password@host:5432/db?sslmode=require: call records "
        "in PostgreSQL, shared by every replica (CALL_DB_PATH is then not used); unset: "
        "SQLite.",
    )
    call_db_pool_size: int = Field(
        5, ge=1, le=100, description="Connections each instance keeps to CALL_DB_URL at most."
    )
    call_db_statement_timeout_ms: int = Field(
        5000,
        ge=100,
        le=600_000,
        description="A statement on CALL_DB_URL that takes longer fails (and is retried).",
    )
    call_db_spill_dir: str | None = Field(
        None,
        description="Where call records the database did not take (it was away) are kept "
        "at shutdown, and when too many wait; the next start imports them. Unset: beside "
        "CALL_DB_PATH (the working directory with CALL_DB_URL).",
    )
    replica_name: str | None = Field(
        None,
        description="This instance's name, shown beside its live calls in every replica's "
        "console; unset: HOSTNAME (a Kubernetes pod's name), else the machine's name.",
    )
    console_password: SecretStr | None = Field(
        None,
        description="Turns on the web console at /console (and its softphone); unset: off.",
    )
    metrics_token: SecretStr | None = Field(
        None, description="If set, GET /metrics needs Authorization: Bearer <it>."
    )
    recording: Literal["off", "bridge", "twilio"] = Field(
        "off",
        description="bridge: the bridge records each call in stereo (RECORDING_FORMAT), the "
        "caller left and the assistant right as the caller heard it, in RECORDINGS_DIR. "
        "twilio: Twilio records it (dual channel), its Recording SID and URL go in the "
        "call's record (needs TWILIO_AUTH_TOKEN and PUBLIC_URL). Per profile too. Consent is "
        "the operator's: see RECORDING_NOTICE.",
    )
    recording_format: Literal["wav", "flac", "opus"] = Field(
        "wav",
        description="How RECORDING=bridge writes each call: wav (16-bit, the simplest); "
        "flac (lossless, 40-65% smaller on the benchmark's calls); opus (Ogg Opus: 6x "
        "smaller, lossy, and its encoding costs about 4x the whole bridge's CPU per call).",
    )
    recording_retention_days: float = Field(
        0,
        ge=0,
        description="Recordings (and call timelines) older than this many days are deleted, "
        "hourly; the rest of each record is kept. 0: kept until deleted from the console.",
    )
    recordings_dir: str | None = Field(
        None,
        description="Where RECORDING=bridge writes each call's file (CallSid.wav, .flac or "
        ".ogg); unset: a recordings folder beside CALL_DB_PATH.",
    )
    recordings_url: str | None = Field(
        None,
        description="s3://bucket/prefix: RECORDING=bridge keeps each call's audio and "
        "timeline in this bucket of any S3-compatible service (AWS, GCS, MinIO, R2), "
        "uploaded in parts as the call goes, with credentials from the AWS chain "
        "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, a role). Unset: files in "
        "RECORDINGS_DIR.",
    )
    recordings_s3_endpoint: str | None = Field(
        None,
        description="The S3 API's URL for a service other than AWS: MinIO's, "
        "https://<account>.r2.cloudflarestorage.com, https://storage.googleapis.com. "
        "Unset: AWS.",
    )
    recordings_s3_region: str | None = Field(
        None,
        description="The bucket's region (auto for R2); unset: the AWS chain's (AWS_REGION), "
        "else us-east-1.",
    )
    recordings_s3_path_style: bool = Field(
        False,
        description="Name the bucket in the path (endpoint/bucket/key), as MinIO and most "
        "self-hosted services want; false: as the service prefers (bucket.endpoint on AWS).",
    )
    recording_notice: str | None = Field(
        None,
        description="Said to every caller before the assistant answers, e.g. that calls "
        "are recorded (consent laws); per profile too. Unset: nothing.",
    )
    post_call_webhook_url: str | None = Field(
        None,
        repr=False,  # its query or user:password@ may hold a credential
        description="When a call's record is complete, it is POSTed here as JSON, signed the "
        "Standard Webhooks way; unset: off. https (http only to this machine).",
    )
    post_call_webhook_secret: SecretStr | None = Field(
        None,
        description="The signing secret for POST_CALL_WEBHOOK_URL, whsec_ and base64 "
        "(at least 24 bytes), as your receiver verifies it.",
    )
    post_call_webhook_retry_s: float = Field(
        86400,
        gt=0,
        le=7 * 86400,
        description="A post-call webhook that keeps failing is retried with backoff for "
        "this long, then given up (logged).",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="auto: JSON lines unless the log goes to a terminal."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://bridge.example.com")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or fragment")
        return value.rstrip("/")

    @field_validator("realtime_url")
    @classmethod
    def _check_realtime_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("wss", "ws") or not parts.hostname:
            raise ValueError("must be a ws:// or wss:// URL")
        return value

    @field_validator("azure_openai_endpoint")
    @classmethod
    def _check_azure_endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http", "wss", "ws") or not parts.hostname:
            raise ValueError("must be a URL such as https://my-resource.openai.azure.com")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or fragment")
        return value

    @field_validator("realtime_headers", mode="before")
    @classmethod
    def _parse_headers(cls, value: object) -> object:
        value = _json_object(value, '{"Session-Id": "{call_sid}"}')
        if isinstance(value, dict) and not all(isinstance(v, str) for v in value.values()):
            raise ValueError("every header value must be a string")
        return value

    @field_validator("recordings_url")
    @classmethod
    def _check_recordings_url(cls, value: str | None) -> str | None:
        return parse_recordings_url(value).url if value else None

    @field_validator("recordings_s3_endpoint")
    @classmethod
    def _check_s3_endpoint(cls, value: str | None) -> str | None:
        return check_endpoint(value) if value else None

    @field_validator("recordings_s3_region")
    @classmethod
    def _check_s3_region(cls, value: str | None) -> str | None:
        return check_region(value) if value else None

    @field_validator("operator_token", "metrics_token")
    @classmethod
    def _token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        return _at_least(value, 24)  # machines send these: no reason for a short one

    @field_validator("console_password")
    @classmethod
    def _password_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        return _at_least(value, 12)  # a person types it; logins are throttled

    @field_validator("post_call_webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https URL such as https://crm.example.com/calls")
        # Call records are personal data: only https leaves this machine.
        if parts.scheme == "http" and not _is_this_machine(parts.hostname):
            raise ValueError("must be https (http only to localhost or 127.0.0.1)")
        return value

    @field_validator("call_db_url")
    @classmethod
    def _check_call_db_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError(
                "must be a postgresql:// URL such as "
                "postgresql://bridge:PASSWORD@db.example.com:5432/calls?sslmode=require"
            )
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(value)
        except ProgrammingError:
            raise ValueError("is not a URL PostgreSQL understands") from None
        return value

    @field_validator("post_call_webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().removeprefix("whsec_")
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be whsec_ followed by base64") from None
        if len(key) < 24:
            raise ValueError("must hold at least 24 bytes (whsec_ and 32 or more base64)")
        return value

    @field_validator("builtin_tools", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("backchannels", mode="before")
    @classmethod
    def _split_phrases(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, (list, tuple)):
            return [p for v in value if isinstance(v, str) and (p := normal_words(v))]
        return value

    @field_validator("builtin_tools")
    @classmethod
    def _known_builtins(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(BUILTIN_NAMES))
        if unknown:
            raise ValueError(
                f"unknown built-in tool(s) {', '.join(unknown)}; the built-ins are "
                + ", ".join(BUILTIN_NAMES)
            )
        return value

    @field_validator("transfer_targets", mode="before")
    @classmethod
    def _parse_targets(cls, value: object) -> object:
        return _json_object(value, '{"sales": "+15551234567"}')

    @field_validator("transfer_targets")
    @classmethod
    def _check_targets(cls, value: dict[str, str]) -> dict[str, str]:
        for name, target in value.items():
            if not _TRANSFER_TARGET.fullmatch(target.strip()):
                raise ValueError(
                    f"{name!r}: {target!r} is neither an E.164 number (+15551234567) nor a "
                    "sip: address"
                )
        return {name: target.strip() for name, target in value.items()}

    @field_validator("realtime_prices")
    @classmethod
    def _check_prices(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_price_overrides(value)  # raises ValueError naming the model and field
        return value

    @field_validator(
        "openai_api_key",
        "twilio_auth_token",
        "transcription_model",
        "azure_openai_api_key",
        "azure_openai_deployment",
        "azure_openai_api_version",
        "realtime_key_query_param",
        "realtime_provider",
        "realtime_dialect",
        "realtime_audio_format",
        "twilio_account_sid",
        "twilio_phone_number",
        "operator_token",
        "profiles_file",
        "tools_module",
        "machine_message",
        "call_db_path",
        "call_db_url",
        "call_db_spill_dir",
        "replica_name",
        "console_password",
        "metrics_token",
        "post_call_webhook_url",
        "post_call_webhook_secret",
        "recording_notice",
        "recordings_dir",
        "tool_filler_file",
        "recordings_url",
        "recordings_s3_endpoint",
        "recordings_s3_region",
        "greeting",
        "session_rollover_s",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """Blank is unset (compose writes `VAR=` for an unset ${VAR}); surrounding
        whitespace goes (a secret stored with `echo` ends in a newline, which no header
        may carry)."""
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator(
        "log_level",
        "recording",
        "recording_format",
        "turn_detection",
        "vad_eagerness",
        "noise_reduction",
        "interruptions",
        mode="before",
    )
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _settings_work_together(self) -> Settings:
        """The checks across settings, all of them, so that one pass reports everything."""
        problems = providers.header_problems(self.realtime_headers)
        provider = self.provider
        if provider is providers.Provider.AZURE:
            if not self.azure_openai_endpoint:
                problems.append("AZURE_OPENAI_ENDPOINT: required for Azure OpenAI")
            if self.azure_openai_api_key is None:
                problems.append("AZURE_OPENAI_API_KEY: required for Azure OpenAI")
            if not self.azure_openai_deployment:
                problems.append(
                    "AZURE_OPENAI_DEPLOYMENT: required for Azure OpenAI (the name of the "
                    "realtime model's deployment)"
                )
            if self.realtime_url:
                problems.append(
                    "REALTIME_URL: not used with Azure; point AZURE_OPENAI_ENDPOINT at the "
                    "gateway instead"
                )
        elif (
            provider is providers.Provider.OPENAI
            and self.openai_api_key is None
            and not self.realtime_url
        ):
            problems.append("OPENAI_API_KEY: required for OpenAI")
        name = self.realtime_key_query_param
        if name is not None:
            if not providers.is_query_name(name):
                problems.append(f"REALTIME_KEY_QUERY_PARAM: {name!r} is not a query parameter name")
            else:
                key = {
                    providers.Provider.OPENAI: self.openai_api_key,
                    providers.Provider.AZURE: self.azure_openai_api_key,
                }.get(provider)
                if key is None:
                    problems.append("REALTIME_KEY_QUERY_PARAM: there is no API key to send")
        # Secure by default: a paid backend is never open to whoever finds the URL.
        if (
            self.twilio_auth_token is None
            and not self.allow_unsigned_twilio
            and self.uses_paid_backend
        ):
            problems.append(
                "TWILIO_AUTH_TOKEN: not set, so anyone could open a media stream and spend "
                "your Realtime API key. Set TWILIO_AUTH_TOKEN (Twilio console > Account "
                "info), or ALLOW_UNSIGNED_TWILIO=true for local development only."
            )
        if self.recording == "twilio":
            problem = self.twilio_recording_problem()
            if problem is not None:
                problems.append(f"RECORDING: {problem}")
        if self.post_call_webhook_url and self.post_call_webhook_secret is None:
            problems.append(
                "POST_CALL_WEBHOOK_SECRET: required with POST_CALL_WEBHOOK_URL (receivers "
                "must be able to tell our posts from anyone's); e.g. whsec_ and "
                "`openssl rand -base64 32`"
            )
        if self.post_call_webhook_url and not self.call_db_path and not self.call_db_url:
            problems.append(
                "POST_CALL_WEBHOOK_URL: needs call records (CALL_DB_PATH or CALL_DB_URL), "
                "where deliveries wait to be retried, across restarts too"
            )
        if not self.recordings_url:
            for name, value in (
                ("RECORDINGS_S3_ENDPOINT", self.recordings_s3_endpoint),
                ("RECORDINGS_S3_REGION", self.recordings_s3_region),
                ("RECORDINGS_S3_PATH_STYLE", self.recordings_s3_path_style or None),
            ):
                if value is not None:
                    problems.append(
                        f"{name}: used only with RECORDINGS_URL (s3://bucket/prefix), which "
                        "is not set: recordings would go to RECORDINGS_DIR"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def twilio_recording_problem(self) -> str | None:
        """What recording through Twilio (RECORDING=twilio, or a profile's) lacks."""
        missing = [
            name
            for name, value in (
                ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
                ("PUBLIC_URL", self.public_url),
            )
            if value is None
        ]
        if not missing:
            return None
        return (
            f"twilio needs {' and '.join(missing)} (to ask Twilio to record, and for its "
            "signed callback to reach this bridge)"
        )

    @property
    def recordings_path(self) -> str:
        """Where RECORDING=bridge writes: RECORDINGS_DIR, else beside the records."""
        if self.recordings_dir:
            return self.recordings_dir
        db = self.call_db_path
        base = os.path.dirname(os.path.abspath(db)) if db and db != ":memory:" else "."
        return os.path.join(base, "recordings")

    @property
    def keeps_records(self) -> bool:
        return bool(self.call_db_url or self.call_db_path)

    @property
    def spill_path(self) -> str:
        """Where records the database did not take wait on disk: CALL_DB_SPILL_DIR, else
        beside the SQLite file, else the working directory."""
        if self.call_db_spill_dir:
            return self.call_db_spill_dir
        db = self.call_db_path
        if self.call_db_url or not db or db == ":memory:":
            return "."
        return os.path.dirname(os.path.abspath(db))

    @property
    def replica(self) -> str:
        """This instance's name among replicas."""
        return self.replica_name or os.environ.get("HOSTNAME") or socket.gethostname()

    @property
    def provider(self) -> providers.Provider:
        return providers.provider_of(self)

    @property
    def dialect(self) -> Dialect:
        return providers.dialect_of(self)

    @property
    def audio_format(self) -> AudioFormat:
        return providers.audio_format_of(self)

    @property
    def rollover_after_s(self) -> float:
        return providers.session_limit_s(self)

    @property
    def prices(self) -> PriceTable:
        table = PriceTable()
        if self.realtime_prices:
            table = table.with_overrides(parse_price_overrides(self.realtime_prices))
        return table

    @property
    def uses_local_agent(self) -> bool:
        """No Realtime backend configured: calls go to the built-in local echo agent."""
        return self.provider is providers.Provider.LOCAL

    @property
    def uses_paid_backend(self) -> bool:
        return not self.uses_local_agent

    @property
    def verifies_signatures(self) -> bool:
        return self.twilio_auth_token is not None


def _is_this_machine(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _at_least(value: SecretStr | None, chars: int) -> SecretStr | None:
    if value is not None and len(value.get_secret_value()) < chars:
        raise ValueError(
            f"must be at least {chars} characters (a random one: python3 -c "
            "'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return value


def _json_object(value: object, example: str) -> object:
    """A setting given as JSON text in the environment (blank: empty)."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return {}
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ValueError(f"must be a JSON object such as {example}") from None


def _is_secret(field: FieldInfo) -> bool:
    """A setting whose value is never shown, in an error or anywhere else: a `SecretStr`,
    or a field marked `repr=False` (a URL or headers that may carry a gateway's key)."""
    annotation = field.annotation
    return not field.repr or annotation is SecretStr or SecretStr in get_args(annotation)


# Upper-cased, as the variables are written and as problems name them.
SECRET_SETTINGS = frozenset(
    name.upper() for name, field in Settings.model_fields.items() if _is_secret(field)
)
# Shown without user:password@, query or fragment, which may carry a credential.
_URL_SETTINGS = {
    "PUBLIC_URL",
    "AZURE_OPENAI_ENDPOINT",
    "RECORDINGS_URL",
    "RECORDINGS_S3_ENDPOINT",
}
# A shorter secret is not looked for in error text: it would blank out ordinary words.
_MIN_REDACTED_CHARS = 4


def _shown_value(location: str, value: object) -> str:
    """How a rejected value is echoed back: never a secret's, and a URL without the parts
    that may hold one (user:password@, ?token=)."""
    if location in SECRET_SETTINGS or isinstance(value, dict):
        return ""
    if location in _URL_SETTINGS and isinstance(value, str):
        parts = urlsplit(value)
        return f" (got {parts.scheme}://{parts.hostname or ''}{parts.path})" if parts.scheme else ""
    return f" (got {value!r})"


def _secret_texts(value: object) -> Iterator[str]:
    """The strings inside a secret setting's value: the value itself, a dict's values, a
    URL's query values and password."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, dict):
        for item in value.values():
            yield from _secret_texts(item)
    elif isinstance(value, str):
        yield value
        yield value.strip()
        parts = urlsplit(value)
        if parts.password:
            yield parts.password
        yield from (v for _, v in parse_qsl(parts.query))


def _secrets_in(errors: list[Any]) -> list[str]:
    """Every secret value the errors carry as input, longest first, so that no message can
    echo one even if a check someday quotes what it was given."""
    found: set[str] = set()
    for error in errors:
        location = ".".join(str(part) for part in error["loc"]).upper()
        given = error.get("input")
        if location in SECRET_SETTINGS:
            found.update(_secret_texts(given))
        elif not location and isinstance(given, dict):  # a check across settings
            for name, value in given.items():
                if str(name).upper() in SECRET_SETTINGS:
                    found.update(_secret_texts(value))
    return sorted((s for s in found if len(s) >= _MIN_REDACTED_CHARS), key=len, reverse=True)


def _redacted(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _describe(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"]).upper()
    message = error["msg"].removeprefix("Value error, ")
    if not location:
        return message
    if error["type"] == "missing":
        return f"{location}: required"
    return f"{location}: {message}{_shown_value(location, error.get('input'))}"


def _problems(exc: ValidationError) -> list[str]:
    """One line per problem (a check that finds several reports them one per line), with
    no secret's value in any of them."""
    errors = exc.errors()
    secrets = _secrets_in(errors)
    return [_redacted(line, secrets) for e in errors for line in _describe(e).splitlines()]


def _named(problem: str) -> str:
    return problem.partition(":")[0]


# A check of settings a command needs beyond the settings themselves: its problems, one
# line each, named by the variable.
SettingsCheck = Callable[["Settings"], list[str]]


def load_settings(*, checks: Iterable[SettingsCheck] = (), **overrides: object) -> Settings:
    """Read and check the settings; raise ConfigError listing every problem at once,
    `checks`' included (what only one command needs: `serve`'s records file)."""
    checks = list(checks)
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]  # pydantic checks them
    except ValidationError as exc:
        problems = _problems(exc)
        failed = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    else:
        problems = [p for check in checks for p in check(settings)]
        if not problems:
            return settings
        raise ConfigError(problems)
    if failed:
        # The checks across settings (a backend missing a piece, the auth token a paid
        # backend needs) only run once every setting is valid. Run them again with each
        # rejected setting at its default, so that one pass reports everything; a problem
        # they find with a setting already reported is the same problem again.
        fields = Settings.model_fields
        defaults = {name: fields[name].get_default(call_default_factory=True) for name in failed}
        reported = {name.upper() for name in failed}
        try:
            retried = Settings(**{**overrides, **defaults})
        except ValidationError as again:
            problems += [p for p in _problems(again) if _named(p) not in reported]
        else:
            problems += [p for check in checks for p in check(retried) if _named(p) not in reported]
    raise ConfigError(problems)
