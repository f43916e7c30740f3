"""Settings from environment variables (and a `.env` file), checked once at start.

Every problem is reported on its own line, naming the variable, so an operator can fix
them all in one go. Secrets are held as `SecretStr` and never printed.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.call import DEFAULT_TIME_LIMIT_MESSAGE
from bridge.realtime.dialects import Dialect

DEFAULT_REALTIME_BASE = "wss://api.openai.com/v1/realtime"
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
    public_url: str | None = Field(
        None,
        description="The https base URL Twilio reaches (for the stream URL and signatures).",
    )
    openai_api_key: SecretStr | None = None
    realtime_url: str | None = Field(
        None,
        description="Full WebSocket URL of the Realtime API.",
        repr=False,  # a gateway may take its key as ?token=...
    )
    realtime_dialect: Dialect = Dialect.GA
    openai_model: str = "gpt-realtime"
    voice: str = "marin"
    instructions: str = (
        "You are a helpful voice assistant on a phone call. Keep answers short and "
        "conversational, and speak in the caller's language."
    )
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
    vad_threshold: float = Field(0.5, ge=0.0, le=1.0)
    vad_prefix_padding_ms: int = Field(300, ge=0, le=5000)
    vad_silence_ms: int = Field(500, ge=100, le=10000)
    vad_interrupt_response: bool = Field(
        True,
        description="Let the session cancel its own answer when the caller talks; when "
        "false, the bridge sends response.cancel itself.",
    )
    transcription_model: str | None = Field(
        "gpt-4o-mini-transcribe",
        description="Transcribes the caller, so a restored session knows both sides; "
        "empty to turn it off.",
    )
    reconnect_budget_s: float = Field(
        10, ge=0, description="How long a lost Realtime session is retried before the apology."
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
    time_limit_message: str = DEFAULT_TIME_LIMIT_MESSAGE
    shutdown_message: str = (
        "I'm sorry, I have to end our call now for maintenance. Please call back in a "
        "minute. Goodbye."
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

    @field_validator("openai_api_key", "twilio_auth_token", "transcription_model", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _secure_by_default(self) -> Settings:
        if (
            self.twilio_auth_token is None
            and not self.allow_unsigned_twilio
            and self.uses_paid_backend
        ):
            raise ValueError(
                "TWILIO_AUTH_TOKEN is not set: anyone could open a media stream and spend "
                "your Realtime API key. Set TWILIO_AUTH_TOKEN (Twilio console > Account "
                "info), or ALLOW_UNSIGNED_TWILIO=true for local development only."
            )
        return self

    @property
    def rollover_after_s(self) -> float:
        if self.session_rollover_s is not None:
            return self.session_rollover_s
        return 55 * 60 if self.realtime_dialect is Dialect.GA else 25 * 60

    @property
    def uses_local_agent(self) -> bool:
        """No Realtime backend configured: calls go to the built-in local echo agent."""
        return self.openai_api_key is None and self.realtime_url is None

    @property
    def uses_paid_backend(self) -> bool:
        return not self.uses_local_agent

    @property
    def verifies_signatures(self) -> bool:
        return self.twilio_auth_token is not None


_URL_SETTINGS = {"PUBLIC_URL", "REALTIME_URL"}


def _shown_value(location: str, value: object) -> str:
    """How a rejected value is echoed back: never a secret, and a URL without the parts
    that may hold one (user:password@, ?token=)."""
    if location.endswith(("KEY", "TOKEN")) or isinstance(value, dict):
        return ""
    if location in _URL_SETTINGS and isinstance(value, str):
        parts = urlsplit(value)
        return f" (got {parts.scheme}://{parts.hostname or ''}{parts.path})" if parts.scheme else ""
    return f" (got {value!r})"


def _describe(error: dict) -> str:
    location = ".".join(str(part) for part in error["loc"]).upper()
    message = error["msg"].removeprefix("Value error, ")
    if not location:
        return message
    if error["type"] == "missing":
        return f"{location}: required"
    return f"{location}: {message}{_shown_value(location, error.get('input'))}"


def load_settings(**overrides: object) -> Settings:
    """Read and check the settings; raise ConfigError listing every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None
