"""The FastAPI app: Twilio's voice webhook and status callback, the Media Streams
WebSocket, outbound calls over HTTP, health probes."""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

import orjson
from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import SecretStr
from twilio.base.exceptions import TwilioRestException
from twilio.http import HttpClient

from bridge.admission import CallRegistry
from bridge.call import CallConfig
from bridge.call_status import CallStatus, CallStatusBook
from bridge.config import ConfigError, Settings
from bridge.console import Console
from bridge.media_stream import CallRunner, ProfileChooser, wait_for_records
from bridge.metrics import Metrics
from bridge.outbound import CALL_STATUS_PATH, OutboundCallError, place_outbound_call
from bridge.profiles import Profile, Profiles, load_profiles
from bridge.realtime.endpoint import RealtimeEndpoint
from bridge.realtime.providers import endpoint_from_settings
from bridge.realtime.session_config import SessionSettings
from bridge.records import SQLiteCallStore
from bridge.tools import ToolRegistry, load_tools_module
from bridge.tools.builtins import BUILTIN_NAMES, TRANSFER_CALL
from bridge.transcode import AudioFormat
from twiml.answer import (
    INSTRUCTIONS_PARAMETER,
    MEDIA_STREAM_PATH,
    PROFILE_PARAMETER,
    busy,
    connect_stream,
    dial,
    machine_answer,
    stream_url,
)
from twiml.request_body import (
    RefusalLog,
    RequestRefused,
    check_query,
    parse_form,
    read_body,
)
from twiml.rest import TwilioRest
from twiml.signature import SIGNATURE_HEADER, SignatureChecker
from twiml.stream_token import StreamTokens

log = logging.getLogger("bridge.app")

# Webhook fields passed on to the stream; everything else stays with Twilio.
CALL_PARAMETERS = ("CallSid", "From", "To", "Direction")
# AnsweredBy values (machine detection) that mean no person is on the line.
MACHINE_ANSWERS = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)
_CALL_REQUEST_FIELDS = {"to", "profile", "instructions", "machine_detection"}
# A POST /calls body is a number, a profile name and instructions of at most ~500 chars.
MAX_CALL_REQUEST_BYTES = 16 * 1024


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
        session_setup_timeout_s=settings.session_setup_timeout_s,
        rollover_after_s=settings.rollover_after_s,
        time_limit_message=settings.time_limit_message,
    )


def load_tool_registry(settings: Settings) -> ToolRegistry:
    """The operator's tools (TOOLS_MODULE), or none. A module that fails to load stops the
    start: a call must never find a promised tool missing."""
    if not settings.tools_module:
        return ToolRegistry()
    try:
        return ToolRegistry(load_tools_module(settings.tools_module))
    except Exception as exc:  # the operator's code: anything can go wrong importing it
        raise ConfigError([f"TOOLS_MODULE: {exc}"]) from None


def profile_call_config(
    base: CallConfig,
    profile: Profile,
    settings: Settings,
    registry: ToolRegistry,
    endpoint: RealtimeEndpoint,
) -> CallConfig:
    """The app's call config, made the profile's: who speaks, and which tools it has."""
    wanted = set(profile.tools) if profile.tools is not None else None
    builtins = {name for name in settings.builtin_tools if wanted is None or name in wanted}
    if not settings.transfer_targets:
        builtins.discard(TRANSFER_CALL)  # nowhere to transfer to
    # None: every one of the operator's tools.
    user_tools = None
    if profile.tools is not None:
        user_tools = [name for name in profile.tools if name not in BUILTIN_NAMES]
    return replace(
        base,
        dialect=endpoint.dialect,
        audio_format=endpoint.audio_format,
        session=replace(base.session, instructions=profile.instructions, voice=profile.voice),
        greeting=profile.greeting,
        tools=registry.specs(user_tools),
        builtin_tools=frozenset(builtins),
        transfer_twiml={
            name: dial(target, settings.transfer_failed_message)
            for name, target in settings.transfer_targets.items()
        },
        transfer_message=settings.transfer_message,
        keypad_pause_s=settings.keypad_pause_s,
    )


def profile_chooser(
    settings: Settings,
    profiles: Profiles,
    registry: ToolRegistry,
    base: CallConfig,
    endpoint: RealtimeEndpoint,
    local_agent_url: str | None = None,
) -> ProfileChooser:
    """What the stream side calls once a call's `start` arrives: its profile's config and
    endpoint, rebuilt from the stream's parameters alone, so any replica can serve it.
    Every profile's setup is built here, once, so a bad one fails at start, not mid-call."""
    setups: dict[str, tuple[CallConfig, RealtimeEndpoint]] = {}
    for profile in profiles.all():
        chosen = endpoint
        if profile.model is not None and profile.model != endpoint.model:
            chosen = endpoint_from_settings(settings, local_agent_url, model=profile.model)
        config = profile_call_config(base, profile, settings, registry, chosen)
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


def create_app(
    settings: Settings,
    endpoint: RealtimeEndpoint | None = None,
    twilio_http: HttpClient | None = None,
) -> FastAPI:
    """The bridge app. Without an `endpoint`, it is built from the settings, starting the
    built-in local echo agent on loopback when no Realtime backend is configured.
    `twilio_http` replaces the twilio SDK's HTTP client (tests: no network).

    Raises ConfigError for a profile file or tools module that cannot work: before any
    call is taken, not in the middle of one."""
    profiles = load_profiles(settings)
    registry = load_tool_registry(settings)
    unknown_tools = profiles.unknown_tools([*BUILTIN_NAMES, *registry.names()])
    if unknown_tools:
        raise ConfigError(unknown_tools)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        agent = None
        app.state.local_agent_url = None
        if endpoint is not None:
            app.state.endpoint = endpoint
        elif settings.uses_local_agent:
            from bridge.local_agent import LocalAgent

            agent = LocalAgent()
            agent_url = app.state.local_agent_url = await agent.start("127.0.0.1", 0)
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
        choose = app.state.profile_for = profile_chooser(
            settings,
            profiles,
            registry,
            call_config_from_settings(settings, chosen),
            chosen,
            app.state.local_agent_url,
        )
        # Until a stream's `start` names its profile, a call is the default profile's.
        app.state.call_config = choose({})[0]
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
        log.info(
            "Agent profiles%s: %s",
            f" from {profiles.source}" if profiles.source else "",
            profiles.summary(),
        )
        if not settings.verifies_signatures:
            log.warning(
                "TWILIO_AUTH_TOKEN is not set: Twilio signatures are NOT checked. Anyone who "
                "can reach this server can place calls through it. Local development only."
            )
        records = store
        if records is not None:
            try:
                _create_private(settings.call_db_path or "")
                await records.open()
                log.info("call records: %s", settings.call_db_path)
            except (OSError, ValueError, sqlite3.Error) as exc:
                # Calls matter more than their records: take calls, say loudly what is lost.
                log.error("call records are OFF: cannot open %s: %s", settings.call_db_path, exc)
                records = app.state.store = None
                console.store = None  # (no call is in progress yet: nothing else holds it)
        try:
            yield
        finally:
            if agent is not None:
                await agent.stop()
            if records is not None:
                await wait_for_records()
                await records.close()

    # No schema or docs pages: they would tell anyone who asks what the server answers.
    app = FastAPI(
        title="phone-bridge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings
    app.state.profiles = profiles
    app.state.tools = registry
    calls = app.state.calls = CallRegistry(settings.max_concurrent_calls)
    statuses = app.state.call_statuses = CallStatusBook()
    metrics = app.state.metrics = Metrics(active_calls=lambda: len(calls))
    db_path = settings.call_db_path
    store = app.state.store = SQLiteCallStore(db_path) if db_path else None
    token = settings.twilio_auth_token
    checker = SignatureChecker(token.get_secret_value()) if token is not None else None
    rest = TwilioRest(token.get_secret_value(), twilio_http) if token is not None else None
    # Same secret on every replica (derived from the auth token): any instance admits a
    # stream whose TwiML another one answered.
    tokens = StreamTokens.from_auth_token(token.get_secret_value()) if token is not None else None
    prices = settings.prices
    derived_base_logged: set[str] = set()
    refusals = RefusalLog(log)

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

    async def signed_webhook(request: Request) -> tuple[str, dict[str, str]]:
        """A Twilio webhook's public base URL and its fields (form or query). Raises
        RequestRefused, before its body is read, for a request with no signature or a body
        too big to be Twilio's; after, for a signature that does not verify."""
        check_query(request)
        if checker is not None and not request.headers.get(SIGNATURE_HEADER):
            raise RequestRefused(403, "invalid Twilio signature")
        fields: dict[str, str] = {}
        if request.method == "POST":
            # Twilio posts application/x-www-form-urlencoded: no multipart library needed.
            fields = await parse_form(await read_body(request))
        base = public_base(request.headers, request.url.scheme, request.url.netloc)
        if checker is not None:
            # The URL as Twilio requested it, query string included and not re-encoded.
            signed_url = base + request.url.path
            if request.url.query:
                signed_url += "?" + request.url.query
            if not checker.webhook_is_signed(
                signed_url, fields, request.headers.get(SIGNATURE_HEADER)
            ):
                raise RequestRefused(403, "invalid Twilio signature")
        return base, fields if request.method == "POST" else dict(request.query_params)

    async def earlier_answer_or_refusal(call_sid: str) -> Response | None:
        """For a CallSid answered before: the same answer again while its stream has not
        come (Twilio retrying a webhook whose answer it never got, or a replay: the same
        single-use token, no second line), or a refusal once it came (Twilio does not ask
        again about such a call). None for a call not seen before."""
        if not call_sid:
            return None
        unseen = calls.earlier_answer(call_sid) is None and not calls.known(call_sid)
        if unseen and await recorded(call_sid):
            unseen = False  # served before this instance's memory: by a replica, or a restart
        # Looked at again after the wait: a copy sent at the same moment may have been
        # answered meanwhile, and must get that same answer, not a token of its own.
        earlier = calls.earlier_answer(call_sid)
        if earlier is not None:
            log.warning("call %s: its webhook came again; answered as before", call_sid)
            return Response(content=earlier, media_type="application/xml")
        if unseen and not calls.known(call_sid):
            return None
        refusals.refused("/voice: a call already answered here (a replay?)")
        return PlainTextResponse("this call was answered already", status_code=409)

    async def recorded(call_sid: str) -> bool:
        """A record of `call_sid` is stored (this call was served here or by a replica
        before): a webhook for it can only be a replay."""
        records = app.state.store
        if records is None:
            return False
        try:
            return await records.has(call_sid)
        except Exception as exc:  # a records problem must not turn callers away
            log.error("could not look up the record of call %s: %s", call_sid, exc)
            return False

    async def webhook_or_refusal(request: Request) -> tuple[str, dict[str, str]] | Response:
        try:
            return await signed_webhook(request)
        except RequestRefused as refused:
            refusals.refused(f"{request.url.path}: {refused.reason}")
            return refused.response()

    def profile_of_call(request: Request, params: Mapping[str, str]) -> Profile:
        """An outbound call names its profile in the webhook URL; any other call gets the
        profile of the number it called."""
        name = request.query_params.get("profile")
        if name:
            profile = profiles.get(name)
            if profile is not None:
                return profile
            log.warning(
                "call %s: no profile %r here, using the default", params.get("CallSid", "?"), name
            )
            return profiles.default
        if params.get("Direction", "inbound") != "inbound":
            return profiles.default  # To is whoever was called, not a number of ours
        return profiles.for_number(params.get("To", ""))

    @app.api_route("/voice", methods=["GET", "POST"], response_class=Response)
    async def voice(request: Request) -> Response:
        """Twilio's voice webhook: answer with `<Connect><Stream>` to this bridge."""
        webhook = await webhook_or_refusal(request)
        if isinstance(webhook, Response):
            return webhook
        base, params = webhook
        call_sid = params.get("CallSid", "")
        answered_by = params.get("AnsweredBy", "")
        if answered_by in MACHINE_ANSWERS:
            # No person to talk to: no stream, no AI session, no line held.
            log.info("call %s: answered by a machine (%s)", call_sid, answered_by)
            return Response(
                content=machine_answer(settings.machine_message), media_type="application/xml"
            )
        seen_before = await earlier_answer_or_refusal(call_sid)
        if seen_before is not None:
            return seen_before
        if not calls.accepting:
            why = "draining for shutdown" if calls.draining else f"{len(calls)} calls in progress"
            log.warning("call %s: answered busy (%s)", call_sid, why)
            answer = busy(settings.busy_message)
            if call_sid:
                calls.answered_busy(call_sid, answer)
            return Response(content=answer, media_type="application/xml")
        url = stream_url(base)
        if not url.startswith("wss://"):
            log.warning("stream URL %s is not wss://: real Twilio will refuse it", url)
        parameters = {name: params.get(name, "") for name in CALL_PARAMETERS}
        if tokens is not None and parameters["CallSid"]:
            parameters[StreamTokens.PARAMETER] = tokens.issue(parameters["CallSid"])
        profile = profile_of_call(request, params)
        parameters[PROFILE_PARAMETER] = profile.name
        instructions = request.query_params.get("instructions")
        if instructions:
            parameters[INSTRUCTIONS_PARAMETER] = instructions
        twiml = connect_stream(url, parameters, settings.fallback_message)
        if call_sid:
            calls.reserve(call_sid, twiml)
        log.info(
            "call %s: answering with a media stream (profile %s%s)",
            call_sid,
            profile.name,
            ", own instructions" if instructions else "",
        )
        return Response(content=twiml, media_type="application/xml")

    @app.post(CALL_STATUS_PATH)
    async def call_status(request: Request) -> Response:
        """Twilio's status callback: how (and how long) each call ended."""
        webhook = await webhook_or_refusal(request)
        if isinstance(webhook, Response):
            return webhook
        status = CallStatus.from_callback(webhook[1])
        if not status.call_sid:
            return PlainTextResponse("no CallSid", status_code=400)
        statuses.record(status)
        records = app.state.store
        if records is not None and status.final:
            try:
                await records.record_status(status.call_sid, status.status, status.duration_s)
            except Exception as exc:  # Twilio gets its 204 regardless: the call is over
                log.error("could not store the status of call %s: %s", status.call_sid, exc)
        if status.final:
            log.info(
                "call %s: %s after %s s (%s%s)",
                status.call_sid,
                status.status,
                "?" if status.duration_s is None else status.duration_s,
                status.direction or "?",
                f", answered by {status.answered_by}" if status.answered_by else "",
            )
        return Response(status_code=204)

    @app.post("/calls")
    async def place_call(request: Request) -> Response:
        """Place an outbound call (operators only: Authorization: Bearer OPERATOR_TOKEN)."""
        operator_token = settings.operator_token
        if operator_token is None:
            return _error(
                404,
                "placing calls over HTTP is off: set OPERATOR_TOKEN to a long random secret "
                "to enable POST /calls",
            )
        if not _bearer_ok(request, operator_token):
            refusals.refused("/calls: no valid bearer token")
            response = _error(401, "a valid 'Authorization: Bearer <OPERATOR_TOKEN>' is required")
            response.headers["Connection"] = "close"  # its body is not read
            return response
        try:
            body = orjson.loads(await read_body(request, MAX_CALL_REQUEST_BYTES))
        except RequestRefused as refused:
            return refused.response()
        except orjson.JSONDecodeError:
            return _error(422, "the body must be a JSON object")
        problem = _call_request_problem(body)
        if problem:
            return _error(422, problem)
        try:
            call_sid = await place_outbound_call(
                settings,
                rest,
                body["to"],
                profile=body.get("profile"),
                instructions=body.get("instructions"),
                machine_detection=body.get("machine_detection", True),
                profiles=profiles,
            )
        except OutboundCallError as exc:
            return _error(422, str(exc))
        except TwilioRestException as exc:
            # Not its message: Twilio's often quotes the number called.
            log.warning("Twilio refused an outbound call: error %s", exc.code)
            return _error(502, f"Twilio refused the call: {exc.msg} (error {exc.code})")
        except (TimeoutError, OSError) as exc:
            log.warning("could not reach Twilio to place a call: %r", exc)
            return _error(502, "could not reach Twilio's API; try again")
        return JSONResponse({"call_sid": call_sid}, status_code=201)

    @app.websocket(MEDIA_STREAM_PATH)
    async def media_stream(websocket: WebSocket) -> None:
        """Twilio Media Streams: one call's audio, both ways."""
        if checker is not None:
            base = public_base(websocket.headers, websocket.url.scheme, websocket.url.netloc)
            signed = checker.stream_is_signed(
                stream_url(base), websocket.headers.get(SIGNATURE_HEADER)
            )
            # The console's softphone has no Twilio signature: its login session stands in.
            if not signed and not console.websocket_allowed(websocket):
                refusals.refused(f"{MEDIA_STREAM_PATH}: invalid Twilio signature")
                await websocket.close(code=1008)
                return
        # No line is taken yet: only a `start` with a valid, unredeemed token for its
        # CallSid gets one (calls.admit), so an upgrade that never starts holds no line.
        await websocket.accept()
        runner = CallRunner(
            websocket,
            app.state.endpoint,
            app.state.call_config,
            rest,
            tokens,
            prices,
            tools=registry,
            profile_for=app.state.profile_for,
            tool_timeout_s=settings.tool_timeout_s,
            metrics=metrics,
            store=app.state.store,
            admit=calls.admit,
        )
        try:
            await runner.run()
        finally:
            calls.discard(runner)

    @app.get("/metrics")
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus: calls, turn latency, barge-ins, errors, tokens and cost."""
        wanted = settings.metrics_token
        if wanted is not None and not _bearer_ok(request, wanted):
            return _error(401, "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>")
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    console = app.state.console = Console(settings, calls=calls, store=store, tokens=tokens)
    app.include_router(console.router)

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


def _create_private(path: str) -> None:
    """Create the records file readable by its owner only: it holds numbers and what
    callers said."""
    if path and path != ":memory:" and not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _bearer_ok(request: Request, secret: SecretStr) -> bool:
    """`Authorization: Bearer <secret>`, compared in constant time."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = secret.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _call_request_problem(body: object) -> str | None:
    """What is wrong with a POST /calls body's shape, if anything (values are checked
    when the call is placed)."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    unknown = sorted(set(body) - _CALL_REQUEST_FIELDS)
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}; the fields are " + ", ".join(
            sorted(_CALL_REQUEST_FIELDS)
        )
    if not isinstance(body.get("to"), str):
        return "to: required, the number to call (E.164) or a sip: address"
    for name in ("profile", "instructions"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return f"{name}: must be a string"
    if not isinstance(body.get("machine_detection", True), bool):
        return "machine_detection: must be true or false"
    return None
