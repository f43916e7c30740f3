"""The FastAPI app, wired: Twilio's webhooks (`twiml.webhooks`), the Media Streams
WebSocket (one `CallRunner` per call), outbound calls over HTTP, the console, health and
metrics. The pieces live in their own modules; this one only puts them together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from twilio.http import HttpClient

from bridge.admission import CallRegistry
from bridge.call_recording import RECORDING_FORMATS
from bridge.call_runner import CallRunner, wait_for_records
from bridge.call_setup import call_setup, load_tool_filler, load_tool_registry
from bridge.console import Console
from bridge.core.call_config import StreamLimits
from bridge.live_calls import STALE_AFTER_S, LiveCallBeacon
from bridge.metrics import Metrics
from bridge.operator_auth import api_error, bearer_ok
from bridge.outbound import outbound_router
from bridge.post_call_webhook import PostCallWebhook
from bridge.profiles import Profiles, load_profiles
from bridge.realtime.endpoint import RealtimeEndpoint
from bridge.realtime.providers import endpoint_from_settings
from bridge.recording_storage import RecordingStorage
from bridge.records.backends import store_for
from bridge.records.model import Recording
from bridge.records.store import CallStore
from bridge.records.write_behind import WriteBehindStore
from bridge.settings import ConfigError, Settings
from bridge.tools.builtins import BUILTIN_NAMES
from bridge.transcode import AudioFormat
from twiml.answer import MEDIA_STREAM_PATH, PROFILE_PARAMETER, stream_url
from twiml.call_status import CallStatus, RecordingStatus
from twiml.request_body import RefusalLog
from twiml.rest import TwilioRest
from twiml.signature import SIGNATURE_HEADER, SignatureChecker
from twiml.stream_token import StreamTokens
from twiml.webhooks import RECORDING_STATUS_PATH, PublicBase, WebhookConfig, webhook_router

log = logging.getLogger("bridge.app")

# How long the voice webhook waits to learn whether a call was served already (the replay
# guard): Twilio waits for its answer, and so does the caller.
RECORDED_LOOKUP_S = 1.0


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
    filler = load_tool_filler(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        agent = None
        agent_url = None
        if endpoint is not None:
            chosen = endpoint
        elif settings.uses_local_agent:
            from bridge.local_agent import LocalAgent

            agent = LocalAgent()
            agent_url = await agent.start("127.0.0.1", 0)
            chosen = endpoint_from_settings(settings, agent_url)
            log.warning(
                "No OPENAI_API_KEY, REALTIME_URL or AZURE_OPENAI_ENDPOINT set: running on "
                "the built-in LOCAL ECHO AGENT at %s (callers hear their own words back). "
                "Set OPENAI_API_KEY to talk to OpenAI.",
                agent_url,
            )
        else:
            chosen = endpoint_from_settings(settings)
        app.state.endpoint = chosen
        app.state.call_setup = call_setup(
            settings, profiles, registry, chosen, agent_url, filler=filler
        )
        _log_setup(settings, chosen, profiles)
        records = app.state.store
        beacon = None
        if records is not None:
            try:
                if not settings.call_db_url:
                    _create_private(settings.call_db_path or "")
                # A database that is away does not hold the start up: the records wait in
                # the write-behind queue, and the store keeps trying.
                await records.open()
                log.info(
                    "call records: %s%s",
                    records,
                    "" if records.available else " (not reachable yet: records wait in memory)",
                )
            except (OSError, ValueError, sqlite3.Error) as exc:
                # Calls matter more than their records: take calls, say loudly what is lost.
                log.error("call records are OFF: cannot open %s: %s", records, exc)
                records = app.state.store = None
                console.store = None  # (no call is in progress yet: nothing else holds it)
        if records is not None:
            beacon = LiveCallBeacon(calls, records, settings.replica)
            beacon.start()
        webhook = app.state.webhook = _post_call_webhook(settings, records)
        if webhook is not None and records is not None:
            records.on_saved = webhook.wake  # a record saved late: its webhook goes at once
            webhook.start()
            log.info("post-call webhook: %s", webhook.safe_url)
        _log_recording(settings, profiles, recordings)
        retention = settings.recording_retention_days
        upkeep = None
        if recordings.bucket is not None or (records is not None and retention > 0):
            upkeep = asyncio.create_task(
                _keep_recordings(recordings, records if retention > 0 else None, retention)
            )
        try:
            yield
        finally:
            if upkeep is not None:
                upkeep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await upkeep
            if agent is not None:
                await agent.stop()
            await wait_for_records()  # (the recordings' last parts too)
            if records is not None:
                if beacon is not None:
                    await beacon.stop()
                if webhook is not None:
                    await webhook.stop()  # what it has not delivered waits in the records
                await records.close()

    # No schema or docs pages: they would tell anyone who asks what the server answers.
    app = FastAPI(
        title="phone-bridge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings
    app.state.profiles = profiles
    app.state.tools = registry
    calls = app.state.calls = CallRegistry(settings.max_concurrent_calls)
    metrics = app.state.metrics = Metrics(active_calls=lambda: len(calls))
    inner = store_for(settings)
    store = (
        WriteBehindStore(
            inner,
            Path(settings.spill_path),
            replica=settings.replica,
            observer=metrics,
            # A shared database takes several writes at once; SQLite's one thread does not.
            concurrency=settings.call_db_pool_size if settings.call_db_url else 1,
        )
        if inner is not None
        else None
    )
    app.state.store = store
    metrics.count_queued_records(lambda: store.queued if store is not None else 0)
    app.state.webhook = None  # the post-call webhook, once the records are open
    token = settings.twilio_auth_token
    checker = SignatureChecker(token.get_secret_value()) if token is not None else None
    rest = TwilioRest(token.get_secret_value(), twilio_http) if token is not None else None
    # RECORDING, or each profile's: where the bridge writes its recordings (and finds those
    # of earlier calls), and where Twilio posts the status of its own (signed like every
    # webhook).
    recording_modes = profiles.recording_modes()
    recordings = app.state.recordings = RecordingStorage.from_settings(settings)
    recording_callback = (
        settings.public_url + RECORDING_STATUS_PATH
        if "twilio" in recording_modes and settings.public_url
        else None
    )

    def recording_of_call(parameters: Mapping[str, str]) -> str:
        """How a call is recorded: as its profile says (the default's for an unknown one)."""
        profile = profiles.get(parameters.get(PROFILE_PARAMETER) or "") or profiles.default
        return profile.recording

    # Same secret on every replica (derived from the auth token): any instance admits a
    # stream whose TwiML another one answered.
    tokens = StreamTokens.from_auth_token(token.get_secret_value()) if token is not None else None
    public_base = PublicBase(settings.public_url)
    refusals = RefusalLog(log)
    limits = StreamLimits()

    async def recorded(call_sid: str) -> bool:
        """The call was served already: its record is stored, or another replica has its
        stream live (the records are shared)."""
        records = app.state.store
        if records is None or not records.available:
            return False  # (the records are away: a caller is not kept waiting on them)
        try:
            async with asyncio.timeout(RECORDED_LOOKUP_S):
                if await records.has(call_sid):
                    return True
                fresh_since = time.time() - STALE_AFTER_S
                return await records.live_replica(call_sid, fresh_since) is not None
        except Exception as exc:  # a records problem must not turn callers away
            log.error(
                "could not look up the record of call %s: %s", call_sid, str(exc) or repr(exc)
            )
            return False

    async def on_final_status(status: CallStatus) -> None:
        records = app.state.store
        if records is None:
            return
        try:
            await records.record_status(status.call_sid, status.status, status.duration_s)
        except Exception as exc:  # Twilio gets its 204 regardless: the call is over
            log.error("could not store the status of call %s: %s", status.call_sid, exc)

    async def on_recording_status(status: RecordingStatus) -> None:
        records = app.state.store
        if records is None:
            return
        update = Recording(
            "twilio", status.status, status.recording_sid, status.url, status.duration_s
        )
        try:
            await records.record_recording(status.call_sid, update)
        except Exception as exc:  # Twilio gets its 204 regardless
            log.error("could not store the recording of call %s: %s", status.call_sid, exc)

    def notice_of_profile(name: str) -> str | None:
        profile = profiles.get(name)
        return profile.recording_notice if profile is not None else None

    def profile_of_call(request: Request, params: Mapping[str, str]) -> str:
        """An outbound call names its profile in the webhook URL; any other call gets the
        profile of the number it called."""
        name = request.query_params.get("profile")
        if name:
            if profiles.get(name) is not None:
                return name
            log.warning(
                "call %s: no profile %r here, using the default", params.get("CallSid", "?"), name
            )
            return profiles.default.name
        if params.get("Direction", "inbound") != "inbound":
            return profiles.default.name  # To is whoever was called, not a number of ours
        return profiles.for_number(params.get("To", "")).name

    app.include_router(
        webhook_router(
            WebhookConfig(
                lines=calls,
                public_base=public_base,
                refusals=refusals,
                profile_of_call=profile_of_call,
                recorded=recorded,
                on_final_status=on_final_status,
                checker=checker,
                tokens=tokens,
                busy_message=settings.busy_message,
                fallback_message=settings.fallback_message,
                machine_message=settings.machine_message,
                notice_of_profile=notice_of_profile,
                on_recording_status=on_recording_status,
            )
        )
    )
    app.include_router(outbound_router(settings, rest, profiles, refusals))

    @app.websocket(MEDIA_STREAM_PATH)
    async def media_stream(websocket: WebSocket) -> None:
        """Twilio Media Streams: one call's audio, both ways."""
        if checker is not None:
            base = public_base.of(websocket.headers, websocket.url.scheme, websocket.url.netloc)
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
            app.state.call_setup,
            limits=limits,
            rest=rest,
            tokens=tokens,
            prices=settings.prices,
            tools=registry,
            tool_timeout_s=settings.tool_timeout_s,
            metrics=metrics,
            store=app.state.store,
            admit=calls.admit,
            answered_at=calls.answered_at,
            webhook=app.state.webhook,
            recording_of=recording_of_call,
            recording_callback=recording_callback,
            recordings=recordings if "bridge" in recording_modes else None,
            recording_format=RECORDING_FORMATS[settings.recording_format],
        )
        try:
            await runner.run()
        finally:
            calls.discard(runner)

    @app.get("/metrics")
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus: calls, turn latency, barge-ins, errors, tokens and cost."""
        wanted = settings.metrics_token
        if wanted is not None and not bearer_ok(request, wanted):
            return api_error(401, "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>")
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    console = app.state.console = Console(
        settings, calls=calls, store=app.state.store, tokens=tokens, recordings=recordings
    )
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


def _log_setup(settings: Settings, endpoint: RealtimeEndpoint, profiles: Profiles) -> None:
    log.info(
        "Realtime backend: %s %s (%s dialect, model %s), audio %s",
        endpoint.provider,
        endpoint.safe_url,
        endpoint.dialect.value,
        endpoint.model or "-",
        "mu-law passthrough"
        if endpoint.audio_format is AudioFormat.PCMU
        else f"transcoded to {endpoint.audio_format.value}",
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


def _log_recording(settings: Settings, profiles: Profiles, recordings: RecordingStorage) -> None:
    """Say which calls are recorded, and how: consent is the operator's to get."""
    recorded = {p.name: p.recording for p in profiles.all() if p.recording != "off"}
    if not recorded:
        return
    where = {
        "bridge": f"by the bridge as {settings.recording_format} in {recordings.where}",
        "twilio": "by Twilio",
    }
    if len(set(recorded.values())) == 1 and len(recorded) == len(profiles.all()):
        how = where[next(iter(recorded.values()))]
        log.info("recording every call %s (consent is yours)", how)
        return
    for name, mode in recorded.items():
        log.info("recording the calls of profile %s %s (consent is yours)", name, where[mode])


async def _keep_recordings(
    recordings: RecordingStorage, records: CallStore | None, days: float
) -> None:
    """At start, then every hour: with a bucket, say whether it answers (a bucket that does
    not costs recordings, never calls: one line here, and each record says why) and finish
    what bridges that stopped mid-call left; with RECORDING_RETENTION_DAYS, delete
    recordings past it."""
    answers = True
    if recordings.bucket is not None:
        problem = await recordings.check()
        if problem is not None:
            log.error("recordings to %s will fail: %s", recordings.where, problem)
            answers = False  # (its tidy-up would only say so again, at start)
    while True:
        if answers:
            await recordings.tidy()
        answers = True
        if records is not None:
            try:
                await recordings.purge(records, days)
            except Exception as exc:  # the records are away: next hour
                log.error("could not delete old recordings: %s", exc)
        await asyncio.sleep(3600)


def _post_call_webhook(settings: Settings, records: CallStore | None) -> PostCallWebhook | None:
    url, secret = settings.post_call_webhook_url, settings.post_call_webhook_secret
    if url is None or secret is None:
        return None
    if records is None:  # (the settings require records; they failed to open)
        log.error("post-call webhooks are OFF: they wait in the call records, which are off")
        return None
    return PostCallWebhook(
        url, secret.get_secret_value(), records, retry_for_s=settings.post_call_webhook_retry_s
    )


def _create_private(path: str) -> None:
    """Create the records file readable by its owner only: it holds numbers and what
    callers said."""
    if path and path != ":memory:" and not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
