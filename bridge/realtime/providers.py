"""Where each provider's Realtime API lives: URL, headers, dialect and audio format.

This is the only module that knows providers apart. It turns the settings into a
`RealtimeEndpoint`; everything after that (the call core, the socket adapter) works the
same for OpenAI, Azure OpenAI, a gateway in front of either, or the local agent.

- OpenAI: ``wss://api.openai.com/v1/realtime?model=<model>``, ``Authorization: Bearer``.
  GA by default; the deprecated beta interface adds ``OpenAI-Beta: realtime=v1``.
- Azure OpenAI, GA: ``<endpoint>/openai/v1/realtime?model=<deployment>`` with an
  ``api-key`` header (no api-version: Azure answers 401 to one there).
- Azure OpenAI, preview (when an api-version is set):
  ``<endpoint>/openai/realtime?api-version=<v>&deployment=<deployment>``, which speaks
  the beta dialect.
- Gateways: a different base URL (REALTIME_URL, or AZURE_OPENAI_ENDPOINT pointed at the
  gateway), the key as a query parameter instead of a header, and extra headers whose
  values may name fields of the call, e.g. ``Session-Id: {call_sid}``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from bridge.realtime.dialects import Dialect
from bridge.realtime.endpoint import RealtimeEndpoint
from bridge.transcode import AudioFormat
from bridge.usage import LOCAL_AGENT_MODEL

if TYPE_CHECKING:
    from bridge.settings import Settings

OPENAI_REALTIME_URL = "wss://api.openai.com/v1/realtime"
# Fields of a call that extra header values may use, as {name}.
CALL_FIELDS = ("call_sid", "account_sid", "stream_sid", "from", "to")
# Headers the WebSocket handshake itself owns: a configured value would break it.
_HANDSHAKE_HEADERS = {
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "content-length",
    "transfer-encoding",
}
_TOKEN_CHARS = set(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
# What websockets (and HTTP) take in a header value, minus the bytes above 0x7f, which a
# JSON string would send as UTF-8 of another character.
_HEADER_VALUE_CHARS = {"\t", *(chr(c) for c in range(0x20, 0x7F))}
_FORMATTER = string.Formatter()
# Models known to take G.711 directly: every Realtime model of OpenAI's (and Azure's).
_G711_MODEL_PREFIXES = ("gpt-realtime", "gpt-4o-realtime", "gpt-4o-mini-realtime")
_AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")


class Provider(StrEnum):
    OPENAI = "openai"
    AZURE = "azure"
    LOCAL = "local"  # the built-in echo agent: no credentials configured


# --- checks run when the settings load --------------------------------------------------------


def header_problems(headers: Mapping[str, str]) -> list[str]:
    """What is wrong with REALTIME_HEADERS, one line each (values are never echoed: they
    may hold a gateway's key)."""
    problems = []
    for name, template in headers.items():
        if not name or not set(name) <= _TOKEN_CHARS:
            problems.append(f"REALTIME_HEADERS: {name!r} is not a valid header name")
            continue
        if name.lower() in _HANDSHAKE_HEADERS:
            problems.append(f"REALTIME_HEADERS: {name} belongs to the WebSocket handshake")
            continue
        if not isinstance(template, str) or not set(template) <= _HEADER_VALUE_CHARS:
            problems.append(
                f"REALTIME_HEADERS: the value of {name} must be printable ASCII on one line"
            )
            continue
        try:
            parsed = [(f, spec, conv) for _, f, spec, conv in _FORMATTER.parse(template)]
        except ValueError:
            problems.append(f"REALTIME_HEADERS: the value of {name} has an unmatched brace")
            continue
        fields = [f for f, _, _ in parsed if f is not None]
        if any(spec or conv for f, spec, conv in parsed if f is not None):
            problems.append(
                f"REALTIME_HEADERS: the value of {name} may only use plain fields like "
                "{call_sid}, without a conversion or format spec"
            )
            continue
        unknown = sorted({f for f in fields if f not in CALL_FIELDS})
        if unknown:
            known = ", ".join("{" + f + "}" for f in CALL_FIELDS)
            problems.append(
                f"REALTIME_HEADERS: the value of {name} uses "
                + ", ".join("{" + f + "}" for f in unknown)
                + f"; the fields are {known} (double braces for a literal brace)"
            )
    return problems


def is_query_name(name: str) -> bool:
    return bool(name) and set(name) <= _TOKEN_CHARS - {"&", "+", "%", "#"}


# --- resolution ------------------------------------------------------------------------------


def provider_of(settings: Settings) -> Provider:
    if settings.realtime_provider is not None:
        return Provider(settings.realtime_provider)
    if settings.azure_openai_endpoint or settings.azure_openai_deployment:
        # A deployment without an endpoint is an Azure setup missing a piece (reported as
        # such), never a reason to fall back to the echo agent.
        return Provider.AZURE
    if settings.openai_api_key is not None or settings.realtime_url:
        return Provider.OPENAI
    if settings.azure_openai_api_key is not None:
        return Provider.AZURE
    return Provider.LOCAL


def dialect_of(settings: Settings) -> Dialect:
    """REALTIME_DIALECT if set; otherwise beta for Azure's preview API, GA for the rest."""
    if settings.realtime_dialect is not None:
        return settings.realtime_dialect
    if provider_of(settings) is Provider.AZURE and settings.azure_openai_api_version:
        return Dialect.BETA
    return Dialect.GA


def model_of(settings: Settings) -> str:
    """The model (for Azure, the deployment) a call's session runs."""
    if provider_of(settings) is Provider.AZURE:
        return settings.azure_openai_deployment or ""
    if settings.realtime_url:
        query = parse_qs(urlsplit(settings.realtime_url).query)
        for key in ("model", "deployment"):
            if query.get(key):
                return query[key][0]
    return settings.openai_model


def _takes_g711(settings: Settings) -> bool:
    """Whether the backend behind REALTIME_URL is known to take G.711: OpenAI's and Azure's
    own hosts and paths (any deployment name there), or an OpenAI Realtime model by name
    in front of a gateway."""
    url = settings.realtime_url or ""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host == "api.openai.com" or host.endswith(_AZURE_HOSTS) or "/openai/" in parts.path:
        return True
    query = parse_qs(parts.query)
    if query.get("deployment"):
        return True  # Azure's preview form, behind a gateway
    return model_of(settings).lower().startswith(_G711_MODEL_PREFIXES)


def audio_format_of(settings: Settings) -> AudioFormat:
    """REALTIME_AUDIO_FORMAT if set; otherwise mu-law passthrough wherever the model is
    known to take it: every OpenAI and Azure Realtime model does. A server behind
    REALTIME_URL running some other model gets PCM16 24 kHz, the one format every
    Realtime-compatible server takes, with the bridge transcoding."""
    if settings.realtime_audio_format is not None:
        return settings.realtime_audio_format
    if provider_of(settings) is not Provider.OPENAI or not settings.realtime_url:
        return AudioFormat.PCMU
    return AudioFormat.PCMU if _takes_g711(settings) else AudioFormat.PCM16


def session_limit_s(settings: Settings) -> float:
    """When to move a call to a fresh session: before the service ends it (60 min on
    OpenAI GA; 30 min on beta and on Azure, as reported)."""
    if settings.session_rollover_s is not None:
        return settings.session_rollover_s
    if dialect_of(settings) is Dialect.GA and provider_of(settings) is not Provider.AZURE:
        return 55 * 60
    return 25 * 60


def endpoint_from_settings(
    settings: Settings, local_agent_url: str | None = None, model: str | None = None
) -> RealtimeEndpoint:
    """The Realtime endpoint the settings describe (the local agent's when none is set).

    `model` (an agent profile's; on Azure, a deployment) replaces the configured one."""
    provider = provider_of(settings)
    dialect = dialect_of(settings)
    chosen = model
    model = model or model_of(settings)
    if provider is Provider.LOCAL:
        # Whatever a profile asks for, the echo agent answers: its calls are its own,
        # never priced (or shown) as a paid model's.
        chosen, model = None, LOCAL_AGENT_MODEL
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    key = None
    if provider is Provider.AZURE:
        base = _ws_base(settings.azure_openai_endpoint or "")
        if settings.azure_openai_api_version:
            url = base + "/openai/realtime"
            query = {"api-version": settings.azure_openai_api_version, "deployment": model}
        else:
            url = base + "/openai/v1/realtime"
            query = {"model": model}
        if settings.azure_openai_api_key is not None:
            key = settings.azure_openai_api_key.get_secret_value()
            headers["api-key"] = key
    else:
        if provider is Provider.LOCAL:
            if local_agent_url is None:
                raise ValueError("no Realtime backend configured and no local agent running")
            url = local_agent_url
        else:
            url = settings.realtime_url or OPENAI_REALTIME_URL
        # REALTIME_URL is used as given (a gateway may pick its own model, or refuse
        # parameters it does not know) unless OPENAI_MODEL is set to choose one.
        wants_model = (
            not settings.realtime_url
            or "openai_model" in settings.model_fields_set
            or chosen is not None
        )
        if chosen is not None:
            url = _without_query(url, "model", "deployment")
        if wants_model and not _has_query(url, "model", "deployment"):
            query = {"model": model}
        if settings.openai_api_key is not None:
            key = settings.openai_api_key.get_secret_value()
            headers["Authorization"] = "Bearer " + key
    if dialect is Dialect.BETA and provider is not Provider.AZURE:
        headers["OpenAI-Beta"] = "realtime=v1"
    if settings.realtime_key_query_param and key is not None:
        # A gateway that takes the key in the URL gets it there, and not also in a header.
        headers.pop("Authorization", None)
        headers.pop("api-key", None)
        query[settings.realtime_key_query_param] = key
    templates: dict[str, str] = {}
    for name, value in settings.realtime_headers.items():
        for existing in [h for h in headers if h.lower() == name.lower()]:
            del headers[existing]  # the operator's header replaces the provider's
        templates[name] = value
    return RealtimeEndpoint(
        url=_with_query(url, query),
        dialect=dialect,
        headers=headers,
        header_templates=templates,
        provider=provider.value,
        model=model,
        audio_format=audio_format_of(settings),
    )


def call_fields(
    call_sid: str | None,
    account_sid: str | None,
    stream_sid: str | None,
    custom_parameters: Mapping[str, str],
) -> dict[str, str]:
    """The values a header template may use, from the call's `start` message."""
    return {
        "call_sid": call_sid or "",
        "account_sid": account_sid or "",
        "stream_sid": stream_sid or "",
        "from": custom_parameters.get("From", ""),
        "to": custom_parameters.get("To", ""),
    }


def _ws_base(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _has_query(url: str, *names: str) -> bool:
    query = parse_qs(urlsplit(url).query)
    return any(name in query for name in names)


def _without_query(url: str, *names: str) -> str:
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment))


def _with_query(url: str, extra: Mapping[str, str]) -> str:
    if not extra:
        return url
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
