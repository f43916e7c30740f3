"""The FastAPI app: Twilio's voice webhook, the Media Streams WebSocket, a health probe."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from twilio.http import HttpClient

from bridge.admission import CallRegistry
from bridge.call import CallConfig
from bridge.config import Settings
from bridge.media_stream import CallRunner
from bridge.realtime.endpoint import RealtimeEndpoint
from bridge.realtime.providers import endpoint_from_settings
from bridge.realtime.session_config import SessionSettings
from bridge.transcode import AudioFormat
from twiml.answer import MEDIA_STREAM_PATH, busy, connect_stream, stream_url
from twiml.rest import TwilioRest
from twiml.signature import SIGNATURE_HEADER, SignatureChecker
from twiml.stream_token import StreamTokens

log = logging.getLogger("bridge.app")

# Webhook fields passed on to the stream; everything else stays with Twilio.
CALL_PARAMETERS = ("CallSid", "From", "To")


def call_config_from_settings(settings: Settings, endpoint: RealtimeEndpoint) -> CallConfig:
    return CallConfig(
        dialect=endpoint.dialect,
        audio_format=endpoint.audio_format,
        session=SessionSettings(
            voice=settings.voice,
            instructions=settings.instructions,
            vad_threshold=settings.vad_threshold,
            vad_prefix_padding_ms=settings.vad_prefix_padding_ms,
            vad_silence_ms=settings.vad_silence_ms,
            interrupt_response=settings.vad_interrupt_response,
            transcription_model=settings.transcription_model,
        ),
        greeting=settings.greeting,
        max_duration_s=settings.max_call_duration_s or None,
        reconnect_budget_s=settings.reconnect_budget_s,
        rollover_after_s=settings.rollover_after_s,
        time_limit_message=settings.time_limit_message,
    )


def create_app(
    settings: Settings,
    endpoint: RealtimeEndpoint | None = None,
    twilio_http: HttpClient | None = None,
) -> FastAPI:
    """The bridge app. Without an `endpoint`, it is built from the settings, starting the
    built-in local echo agent on loopback when no Realtime backend is configured.
    `twilio_http` replaces the twilio SDK's HTTP client (tests: no network)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        agent = None
        if endpoint is not None:
            app.state.endpoint = endpoint
        elif settings.uses_local_agent:
            from bridge.local_agent import LocalAgent

            agent = LocalAgent()
            agent_url = await agent.start("127.0.0.1", 0)
            app.state.endpoint = endpoint_from_settings(settings, agent_url)
            log.warning(
                "No OPENAI_API_KEY, REALTIME_URL or AZURE_OPENAI_ENDPOINT set: running on "
                "the built-in LOCAL ECHO AGENT at %s (callers hear their own words back). "
                "Set OPENAI_API_KEY to talk to OpenAI.",
                agent_url,
            )
        else:
            app.state.endpoint = endpoint_from_settings(settings)
        chosen: RealtimeEndpoint = app.state.endpoint
        app.state.call_config = call_config_from_settings(settings, chosen)
        log.info(
            "Realtime backend: %s %s (%s dialect, model %s), audio %s",
            chosen.provider,
            chosen.safe_url,
            chosen.dialect.value,
            chosen.model or "-",
            "mu-law passthrough"
            if chosen.audio_format is AudioFormat.PCMU
            else f"transcoded to {chosen.audio_format.value}",
        )
        if not settings.verifies_signatures:
            log.warning(
                "TWILIO_AUTH_TOKEN is not set: Twilio signatures are NOT checked. Anyone who "
                "can reach this server can place calls through it. Local development only."
            )
        try:
            yield
        finally:
            if agent is not None:
                await agent.stop()

    app = FastAPI(title="phone-bridge", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    calls = app.state.calls = CallRegistry(settings.max_concurrent_calls)
    token = settings.twilio_auth_token
    checker = SignatureChecker(token.get_secret_value()) if token is not None else None
    rest = TwilioRest(token.get_secret_value(), twilio_http) if token is not None else None
    # Same secret on every replica (derived from the auth token): any instance admits a
    # stream whose TwiML another one answered.
    tokens = StreamTokens.from_auth_token(token.get_secret_value()) if token is not None else None
    prices = settings.prices
    derived_base_logged: set[str] = set()

    def public_base(headers, scheme: str, host: str) -> str:  # type: ignore[no-untyped-def]
        """PUBLIC_URL, or the base URL this request came in on (behind a proxy, its
        X-Forwarded-* headers), logged once so the operator knows to set PUBLIC_URL."""
        if settings.public_url:
            return settings.public_url
        proto = headers.get("x-forwarded-proto", "").split(",")[0].strip() or scheme
        proto = {"ws": "http", "wss": "https"}.get(proto, proto)
        forwarded_host = headers.get("x-forwarded-host", "").split(",")[0].strip()
        base = f"{proto}://{forwarded_host or host}"
        if base not in derived_base_logged:
            derived_base_logged.add(base)
            log.warning("PUBLIC_URL is not set: using %s, derived from the request", base)
        return base

    @app.api_route("/voice", methods=["GET", "POST"], response_class=Response)
    async def voice(request: Request) -> Response:
        """Twilio's voice webhook: answer with `<Connect><Stream>` to this bridge."""
        # Twilio posts application/x-www-form-urlencoded: the stdlib parses it, no
        # multipart library needed.
        body = (await request.body()).decode("utf-8", "replace") if request.method == "POST" else ""
        fields = dict(parse_qsl(body, keep_blank_values=True))
        base = public_base(request.headers, request.url.scheme, request.url.netloc)
        if checker is not None:
            signed_url = base + request.url.path
            if request.url.query:
                signed_url += "?" + request.url.query
            if not checker.webhook_is_signed(
                signed_url, fields, request.headers.get(SIGNATURE_HEADER)
            ):
                log.warning("rejected an unsigned or wrongly signed /voice request")
                return PlainTextResponse("invalid Twilio signature", status_code=403)
        params = fields if request.method == "POST" else dict(request.query_params)
        if not calls.accepting:
            why = "draining for shutdown" if calls.draining else f"{len(calls)} calls in progress"
            log.warning("call %s: answered busy (%s)", params.get("CallSid", "?"), why)
            return Response(content=busy(settings.busy_message), media_type="application/xml")
        url = stream_url(base)
        if not url.startswith("wss://"):
            log.warning("stream URL %s is not wss://: real Twilio will refuse it", url)
        parameters = {name: params.get(name, "") for name in CALL_PARAMETERS}
        if tokens is not None and parameters["CallSid"]:
            parameters[StreamTokens.PARAMETER] = tokens.issue(parameters["CallSid"])
        twiml = connect_stream(url, parameters, settings.fallback_message)
        calls.reserve()
        log.info("call %s: answering with a media stream", params.get("CallSid", "?"))
        return Response(content=twiml, media_type="application/xml")

    @app.websocket(MEDIA_STREAM_PATH)
    async def media_stream(websocket: WebSocket) -> None:
        """Twilio Media Streams: one call's audio, both ways."""
        if checker is not None:
            base = public_base(websocket.headers, websocket.url.scheme, websocket.url.netloc)
            if not checker.stream_is_signed(
                stream_url(base), websocket.headers.get(SIGNATURE_HEADER)
            ):
                log.warning("rejected an unsigned or wrongly signed media stream")
                await websocket.close(code=1008)
                return
        if calls.full:
            # Only a race between webhooks gets here; 1013 = try again later, and Twilio
            # plays the fallback after <Connect>. No AI session is opened.
            log.warning("refused a media stream: %d calls already in progress", len(calls))
            await websocket.close(code=1013)
            return
        await websocket.accept()
        runner = CallRunner(
            websocket, app.state.endpoint, app.state.call_config, rest, tokens, prices
        )
        calls.add(runner)
        try:
            await runner.run()
        finally:
            calls.discard(runner)

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        """Alive, with the number of calls in progress."""
        return {"status": "ok", "active_calls": len(calls)}

    @app.get("/readyz")
    async def readyz() -> Response:
        """Taking new calls: fails while draining for shutdown or when full."""
        ready = calls.accepting
        body = {"ready": ready, "draining": calls.draining, "active_calls": len(calls)}
        return JSONResponse(body, status_code=200 if ready else 503)

    return app
