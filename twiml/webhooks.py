"""Twilio's webhooks: the voice webhook (answered with `<Connect><Stream>`) and the call
status callback, as a router the app includes.

Whatever an answer needs from the rest of the bridge comes in through `WebhookConfig`:
who may hold a line (`Lines`), which profile a call gets, whether a call was recorded
before, what to do with a call's final status. This package imports nothing from `bridge`.

Every webhook is refused before its body is read when it carries no signature, capped in
size, and checked against the URL Twilio signed (`PUBLIC_URL`, or the request's own base
behind a proxy's X-Forwarded-* headers).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from twiml.answer import (
    INSTRUCTIONS_PARAMETER,
    PROFILE_PARAMETER,
    busy,
    connect_stream,
    machine_answer,
    stream_url,
)
from twiml.call_status import CallStatus, RecordingStatus
from twiml.request_body import RefusalLog, RequestRefused, check_query, parse_form, read_body
from twiml.signature import SIGNATURE_HEADER, SignatureChecker
from twiml.stream_token import StreamTokens

log = logging.getLogger("twiml.webhooks")

VOICE_PATH = "/voice"
CALL_STATUS_PATH = "/call-status"
RECORDING_STATUS_PATH = "/recording-status"
# Webhook fields passed on to the stream; everything else stays with Twilio.
CALL_PARAMETERS = ("CallSid", "From", "To", "Direction")
# AnsweredBy values (machine detection) that mean no person is on the line.
MACHINE_ANSWERS = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)


class Lines(Protocol):
    """Who holds a line: the calls in progress and those answered whose stream is due."""

    draining: bool

    def __len__(self) -> int: ...
    @property
    def accepting(self) -> bool: ...
    def earlier_answer(self, call_sid: str) -> str | None: ...
    def known(self, call_sid: str) -> bool: ...
    def answered_busy(self, call_sid: str, twiml: str) -> None: ...
    def reserve(self, call_sid: str, twiml: str) -> None: ...


class PublicBase:
    """The https base URL Twilio reaches: PUBLIC_URL, or the base URL a request came in on
    (behind a proxy, its X-Forwarded-* headers), logged once so the operator knows to set
    PUBLIC_URL."""

    def __init__(self, configured: str | None) -> None:
        self._configured = configured
        self._logged: set[str] = set()

    def of(self, headers: Mapping[str, str], scheme: str, host: str) -> str:
        if self._configured:
            return self._configured
        proto = headers.get("x-forwarded-proto", "").split(",")[0].strip() or scheme
        proto = {"ws": "http", "wss": "https"}.get(proto, proto)
        forwarded_host = headers.get("x-forwarded-host", "").split(",")[0].strip()
        base = f"{proto}://{forwarded_host or host}"
        if base not in self._logged:
            self._logged.add(base)
            log.warning("PUBLIC_URL is not set: using %s, derived from the request", base)
        return base


@dataclass(frozen=True)
class WebhookConfig:
    lines: Lines
    public_base: PublicBase
    refusals: RefusalLog
    # The call's profile: from the request (an outbound call names it in the URL) and the
    # webhook's fields (the number called).
    profile_of_call: Callable[[Request, Mapping[str, str]], str]
    # A record of the call is stored: it was served before (by a replica, or before a restart).
    recorded: Callable[[str], Awaitable[bool]]
    # What a final call status is for (the call's record).
    on_final_status: Callable[[CallStatus], Awaitable[None]]
    checker: SignatureChecker | None = None  # None: signatures are not checked (local use)
    tokens: StreamTokens | None = None
    busy_message: str = "All lines are busy."
    fallback_message: str | None = None
    machine_message: str | None = None
    # What a profile's callers hear before the stream connects (a recording notice).
    notice_of_profile: Callable[[str], str | None] = lambda profile: None
    # What a recording's status is for (the call's record).
    on_recording_status: Callable[[RecordingStatus], Awaitable[None]] | None = None


def webhook_router(config: WebhookConfig) -> APIRouter:
    router = APIRouter()
    lines, checker = config.lines, config.checker

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
        base = config.public_base.of(request.headers, request.url.scheme, request.url.netloc)
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

    async def webhook_or_refusal(request: Request) -> tuple[str, dict[str, str]] | Response:
        try:
            return await signed_webhook(request)
        except RequestRefused as refused:
            config.refusals.refused(f"{request.url.path}: {refused.reason}")
            return refused.response()

    async def earlier_answer_or_refusal(call_sid: str) -> Response | None:
        """For a CallSid answered before: the same answer again while its stream has not
        come (Twilio retrying a webhook whose answer it never got, or a replay: the same
        single-use token, no second line), or a refusal once it came (Twilio does not ask
        again about such a call). None for a call not seen before."""
        if not call_sid:
            return None
        unseen = lines.earlier_answer(call_sid) is None and not lines.known(call_sid)
        if unseen and await config.recorded(call_sid):
            unseen = False  # served before this instance's memory: by a replica, or a restart
        # Looked at again after the wait: a copy sent at the same moment may have been
        # answered meanwhile, and must get that same answer, not a token of its own.
        earlier = lines.earlier_answer(call_sid)
        if earlier is not None:
            log.warning("call %s: its webhook came again; answered as before", call_sid)
            return _xml(earlier)
        if unseen and not lines.known(call_sid):
            return None
        config.refusals.refused(f"{VOICE_PATH}: a call already answered here (a replay?)")
        return PlainTextResponse("this call was answered already", status_code=409)

    @router.api_route(VOICE_PATH, methods=["GET", "POST"], response_class=Response)
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
            return _xml(machine_answer(config.machine_message))
        seen_before = await earlier_answer_or_refusal(call_sid)
        if seen_before is not None:
            return seen_before
        if not lines.accepting:
            why = "draining for shutdown" if lines.draining else f"{len(lines)} calls in progress"
            log.warning("call %s: answered busy (%s)", call_sid, why)
            answer = busy(config.busy_message)
            if call_sid:
                lines.answered_busy(call_sid, answer)
            return _xml(answer)
        url = stream_url(base)
        if not url.startswith("wss://"):
            log.warning("stream URL %s is not wss://: real Twilio will refuse it", url)
        parameters = {name: params.get(name, "") for name in CALL_PARAMETERS}
        if config.tokens is not None and call_sid:
            parameters[StreamTokens.PARAMETER] = config.tokens.issue(call_sid)
        profile = config.profile_of_call(request, params)
        parameters[PROFILE_PARAMETER] = profile
        instructions = request.query_params.get("instructions")
        if instructions:
            parameters[INSTRUCTIONS_PARAMETER] = instructions
        notice = config.notice_of_profile(profile)
        twiml = connect_stream(url, parameters, config.fallback_message, notice)
        if call_sid:
            lines.reserve(call_sid, twiml)
        log.info(
            "call %s: answering with a media stream (profile %s%s)",
            call_sid,
            profile,
            ", own instructions" if instructions else "",
        )
        return _xml(twiml)

    @router.post(CALL_STATUS_PATH)
    async def call_status(request: Request) -> Response:
        """Twilio's status callback: how (and how long) each call ended."""
        webhook = await webhook_or_refusal(request)
        if isinstance(webhook, Response):
            return webhook
        status = CallStatus.from_callback(webhook[1])
        if not status.call_sid:
            return PlainTextResponse("no CallSid", status_code=400)
        if status.final:
            await config.on_final_status(status)
            log.info(
                "call %s: %s after %s s (%s%s)",
                status.call_sid,
                status.status,
                "?" if status.duration_s is None else status.duration_s,
                status.direction or "?",
                f", answered by {status.answered_by}" if status.answered_by else "",
            )
        return Response(status_code=204)

    @router.post(RECORDING_STATUS_PATH)
    async def recording_status(request: Request) -> Response:
        """Twilio's recording status callback: a call's recording is complete (or absent)."""
        webhook = await webhook_or_refusal(request)
        if isinstance(webhook, Response):
            return webhook
        status = RecordingStatus.from_callback(webhook[1])
        if not status.call_sid or not status.recording_sid:
            return PlainTextResponse("no CallSid or RecordingSid", status_code=400)
        if config.on_recording_status is not None:
            await config.on_recording_status(status)
        log.info(
            "call %s: recording %s %s (%s s)",
            status.call_sid,
            status.recording_sid,
            status.status or "?",
            "?" if status.duration_s is None else status.duration_s,
        )
        return Response(status_code=204)

    return router


def _xml(twiml: str) -> Response:
    return Response(content=twiml, media_type="application/xml")
