"""The web console's routes: login, live calls, past calls, one call, the softphone."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import time
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from starlette.websockets import WebSocket

from bridge.console import pages
from bridge.console.auth import COOKIE_NAME, LoginThrottle, Sessions, same_origin
from bridge.console.object_stream import READ_DEADLINE_S, object_response
from bridge.console.waveform import Waveforms, markers
from bridge.live_calls import STALE_AFTER_S, live_call_rows
from bridge.object_storage import described, in_object_io
from bridge.profiles import DEFAULT_PROFILE
from bridge.recording_storage import (
    LocalRecording,
    ObjectRecording,
    RecordingStorage,
    timeline_document,
)
from bridge.records.store import StoreUnavailable
from twiml.answer import PROFILE_PARAMETER, stream_url
from twiml.request_body import RefusalLog, RequestRefused, parse_form, read_body
from twiml.stream_token import StreamTokens

if TYPE_CHECKING:
    from bridge.admission import CallRegistry
    from bridge.records.model import CallRecord
    from bridge.records.store import CallStore
    from bridge.settings import Settings

log = logging.getLogger("bridge.console")

PAGE_SIZE = 50
BROWSER_FROM = "browser"  # how a softphone call's record is told apart (direction "browser")
BROWSER_TO = "console"
# A login form is a password and a path; anything much bigger is not one.
MAX_FORM_BYTES = 4096
MAX_PROFILE_CHARS = 64
_PROFILE_RE = re.compile(r"[A-Za-z0-9_.:@+-]{1,64}", re.ASCII)
_STATIC_TYPES = {
    "console.css": "text/css; charset=utf-8",
    "softphone.js": "text/javascript; charset=utf-8",
    "capture-worklet.js": "text/javascript; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "recording.js": "text/javascript; charset=utf-8",
}
# Scripts and styles only from the console itself (no inline script: a value that slipped
# past escaping still could not run); the softphone's WebSocket goes to this same host.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    # Framing would let another site trick the operator into clicking Call.
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}


class Console:
    """The operator's web console and its softphone, under /console.

    Off unless CONSOLE_PASSWORD is set: then every /console path answers 404 and
    `websocket_allowed` is always False.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        calls: CallRegistry,
        store: CallStore | None,
        tokens: StreamTokens | None,
        recordings: RecordingStorage | None = None,
        login_delay_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.calls = calls
        self.store = store
        self.tokens = tokens
        self.recordings = recordings or RecordingStorage.from_settings(settings)
        password = settings.console_password
        self.sessions = Sessions(password.get_secret_value()) if password is not None else None
        self.throttle = LoginThrottle(login_delay_s)
        self._waveforms = Waveforms()
        self._refusals = RefusalLog(log)
        self.router = APIRouter(include_in_schema=False)
        if self.sessions is None:
            self._add_disabled_routes()
        else:
            self._static = {
                name: (resources.files("bridge.console").joinpath("static", name).read_bytes())
                for name in _STATIC_TYPES
            }
            self._add_routes()

    @property
    def enabled(self) -> bool:
        return self.sessions is not None

    def websocket_allowed(self, websocket: WebSocket) -> bool:
        """The upgrade comes from a logged-in console page on this server (the softphone):
        it may stand in for a Twilio signature. The stream token in its `start` is still
        checked, exactly as for Twilio."""
        if self.sessions is None or not self.sessions.valid(websocket.cookies.get(COOKIE_NAME)):
            return False
        if not same_origin(websocket.headers, self.settings.public_url):
            # A logged-in operator's browser, sent here by another site's page.
            log.warning(
                "refused a console media stream from another origin (%.100r)",
                websocket.headers.get("origin"),
            )
            return False
        return True

    # --------------------------------------------------------------------------- routes

    def _add_disabled_routes(self) -> None:
        async def console_off(request: Request) -> Response:
            return Response(
                "the console is off: set CONSOLE_PASSWORD to turn it on\n",
                status_code=404,
                media_type="text/plain",
            )

        methods = ["GET", "POST", "HEAD"]
        self.router.add_api_route("/console", console_off, methods=methods)
        self.router.add_api_route("/console/{rest:path}", console_off, methods=methods)

    def _add_routes(self) -> None:
        r = self.router
        r.add_api_route("/console", self._live, methods=["GET"])
        r.add_api_route("/console/", self._live, methods=["GET"])
        r.add_api_route("/console/login", self._login_form, methods=["GET"])
        r.add_api_route("/console/login", self._login, methods=["POST"])
        r.add_api_route("/console/logout", self._logout, methods=["POST"])
        r.add_api_route("/console/calls", self._calls, methods=["GET"])
        r.add_api_route("/console/calls/{call_sid}", self._call, methods=["GET"])
        r.add_api_route(
            "/console/calls/{call_sid}/timeline.json", self._call_timeline, methods=["GET"]
        )
        r.add_api_route(
            "/console/calls/{call_sid}/recording", self._call_recording, methods=["GET"]
        )
        r.add_api_route(  # (its address before FLAC and Opus: pages and links made then)
            "/console/calls/{call_sid}/recording.wav", self._call_recording, methods=["GET"]
        )
        r.add_api_route(
            "/console/calls/{call_sid}/waveform.json", self._call_waveform, methods=["GET"]
        )
        r.add_api_route("/console/calls/{call_sid}/delete", self._delete_call, methods=["POST"])
        r.add_api_route("/console/softphone", self._softphone_page, methods=["GET"])
        r.add_api_route("/console/api/live", self._api_live, methods=["GET"])
        r.add_api_route("/console/api/softphone", self._api_softphone, methods=["POST"])
        r.add_api_route("/console/static/{name}", self._static_file, methods=["GET"])

    # --------------------------------------------------------------------------- helpers

    def _logged_in(self, request: Request) -> bool:
        assert self.sessions is not None
        return self.sessions.valid(request.cookies.get(COOKIE_NAME))

    @staticmethod
    def _page(content: str, status_code: int = 200) -> HTMLResponse:
        return HTMLResponse(content, status_code=status_code, headers=_SECURITY_HEADERS)

    @staticmethod
    def _to_login(request: Request) -> RedirectResponse:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/console/login?next={quote(here, safe='')}", status_code=303)

    @staticmethod
    def _unauthorized() -> JSONResponse:
        # Its body (if any) is not read: the connection closes rather than receive it.
        return JSONResponse(
            {"error": "log in to the console first"},
            status_code=401,
            headers={"Cache-Control": "no-store", "Connection": "close"},
        )

    def _cross_site(self, request: Request) -> bool:
        """A state-changing request another site's page made the browser send. Requests
        without Origin (curl, tests) are not browsers acting for another site."""
        return "origin" in request.headers and not same_origin(
            request.headers, self.settings.public_url
        )

    def _is_https(self, request: Request) -> bool:
        forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        if request.url.scheme == "https" or forwarded == "https":
            return True
        public = self.settings.public_url
        return bool(public) and urlsplit(public).scheme == "https"

    def _public_base(self, request: Request) -> str:
        """The base URL the browser reached us on: PUBLIC_URL when it is that host (so a
        path prefix behind a proxy is kept), else scheme and host from the request."""
        forwarded_host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
        host = forwarded_host or request.headers.get("host") or request.url.netloc
        public = self.settings.public_url
        if public and urlsplit(public).netloc.lower() == host.lower():
            return public
        scheme = "https" if self._is_https(request) else "http"
        return f"{scheme}://{host}"

    @staticmethod
    def _safe_next(value: str | None) -> str:
        """Only a path of the console itself: never another host (an open redirect)."""
        if (
            not value
            or not value.startswith("/console")
            or value.startswith("//")
            or "\\" in value
            or any(ord(c) < 0x20 for c in value)
        ):
            return "/console"
        return value

    async def _live_calls(self) -> list[pages.LiveCall]:
        """The calls in progress on every replica: this one's as they are now, the others'
        as their last heartbeat in the shared records said (this one's only, while the
        records are away)."""
        replica = self.settings.replica
        rows = live_call_rows(self.calls, replica)
        if self.store is not None:
            now = time.time()
            try:
                elsewhere = await self.store.live_calls(now - STALE_AFTER_S)
            except Exception as exc:
                log.warning("console: other replicas' live calls unknown: %s", exc)
            else:
                here = {row.call_sid for row in rows}
                rows += [r for r in elsewhere if r.replica != replica and r.call_sid not in here]
        now = time.time()
        live = [
            pages.LiveCall(
                call_sid=row.call_sid,
                from_number=row.from_number,
                to_number=row.to_number,
                profile=row.profile,
                phase=row.phase,
                duration_s=round(max(0.0, now - row.started_at), 1),
                turns=row.turns,
                barge_ins=row.barge_ins,
                replica=row.replica,
            )
            for row in rows
        ]
        live.sort(key=lambda c: -(c.duration_s or 0.0))
        return live

    def _records_away(self, exc: Exception) -> HTMLResponse:
        log.error("console: the call records cannot be read: %s", exc)
        page = pages.message_page(
            "Call records unavailable",
            "The call records cannot be reached right now; calls go on and are recorded "
            "once they are back. Try again in a moment.",
        )
        return self._page(page, 503)

    # --------------------------------------------------------------------------- pages

    async def _login_form(self, request: Request) -> Response:
        next_path = self._safe_next(request.query_params.get("next"))
        if self._logged_in(request):
            return RedirectResponse(next_path, status_code=303)
        return self._page(pages.login_page(next_path))

    async def _login(self, request: Request) -> Response:
        assert self.sessions is not None
        client = client_address(request)
        try:
            # The browser's urlencoded form; parsed like Twilio's webhooks.
            fields = await parse_form(await read_body(request, MAX_FORM_BYTES))
        except RequestRefused as refused:
            refusal = self._page(
                pages.message_page("Log in", "That form is too big or too slow."), refused.status
            )
            refusal.headers["Connection"] = "close"  # the rest of it is not received
            return refusal
        next_path = self._safe_next(fields.get("next"))
        sessions, password = self.sessions, fields.get("password", "")
        right = await self.throttle.check(client, lambda: sessions.password_matches(password))
        if right is None:
            self._refusals.refused(f"/console/login: too many attempts at once from {client}")
            page = pages.login_page(next_path, "Too many attempts; try again in a moment.")
            return self._page(page, 429)
        if not right:
            log.warning("console: failed login from %s", client)
            return self._page(pages.login_page(next_path, "Wrong password."), 401)
        log.info("console: operator logged in from %s", client)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            self.sessions.issue(),
            max_age=int(self.sessions.ttl_s),
            path="/",  # the softphone's WebSocket to /media-stream must carry it too
            secure=self._is_https(request),
            httponly=True,
            samesite="strict",
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def _logout(self, request: Request) -> Response:
        assert self.sessions is not None
        if self._cross_site(request):
            return self._page(pages.message_page("Log out", "Refused: another site."), 403)
        self.sessions.revoke(request.cookies.get(COOKIE_NAME))
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(
            COOKIE_NAME, path="/", secure=self._is_https(request), httponly=True, samesite="strict"
        )
        return response

    async def _live(self, request: Request) -> Response:
        if not self._logged_in(request):
            return self._to_login(request)
        return self._page(pages.live_page(await self._live_calls()))

    async def _calls(self, request: Request) -> Response:
        if not self._logged_in(request):
            return self._to_login(request)
        query = request.query_params.get("q", "").strip()[:200]
        try:
            page = max(1, min(100_000, int(request.query_params.get("page", "1"))))
        except ValueError:
            page = 1
        if self.store is None:
            return self._page(pages.calls_page(None, query, page, False))
        # One more than a page: whether an "Older" link leads anywhere.
        try:
            found = await self.store.search(query or None, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
        except StoreUnavailable as exc:
            return self._records_away(exc)
        return self._page(pages.calls_page(found[:PAGE_SIZE], query, page, len(found) > PAGE_SIZE))

    async def _call(self, request: Request, call_sid: str) -> Response:
        if not self._logged_in(request):
            return self._to_login(request)
        try:
            record = await self.store.get(call_sid) if self.store is not None else None
        except StoreUnavailable as exc:
            return self._records_away(exc)
        if record is None:
            live = next((c for c in await self._live_calls() if c.call_sid == call_sid), None)
            if live is not None:  # its record is written once it ends
                return self._page(pages.live_call_page(live))
            why = "No call" if self.store is not None else "Call records are off: no call"
            page = pages.message_page("Call not found", f"{why} with the sid {call_sid}.")
            return self._page(page, 404)
        return self._page(pages.call_page(record))

    async def _call_timeline(self, request: Request, call_sid: str) -> Response:
        """The call's timeline as JSON, for a download: {call_sid, started_at, dropped,
        timeline: [{at, moment, detail}]} (`at` in s since the stream started)."""
        if not self._logged_in(request):
            return self._unauthorized()
        record = await self._stored(call_sid)
        if isinstance(record, Response):
            return record
        if record is None:
            return JSONResponse({"error": f"no call with the sid {call_sid}"}, status_code=404)
        body = timeline_document(record)
        filename = f"{re.sub(r'[^A-Za-z0-9_-]', '', call_sid)}-timeline.json"
        return Response(
            body,
            media_type="application/json",
            headers={
                **_SECURITY_HEADERS,
                "Content-Disposition": f'attachment; filename="{filename}"',
            },
        )

    async def _stored(self, call_sid: str) -> CallRecord | Response | None:
        """The call's record (None: none, or records are off), or a 503 saying the
        records are away, for the console's JSON and audio routes."""
        try:
            return await self.store.get(call_sid) if self.store is not None else None
        except StoreUnavailable:
            return JSONResponse({"error": "the call records are unavailable"}, status_code=503)

    async def _recorded_call(
        self, request: Request, call_sid: str
    ) -> tuple[CallRecord, LocalRecording | ObjectRecording, tuple[str, int, str]] | Response:
        """The call's record, its complete recording by the bridge (a file, or an object)
        and that recording's place, length and version; or the answer when there is none,
        or the request is not logged in."""
        if not self._logged_in(request):
            return self._unauthorized()
        record = await self._stored(call_sid)
        if isinstance(record, Response):
            return record
        recording = record.recording if record is not None else None
        found = self.recordings.find(recording)
        complete = recording is not None and recording.status == "completed"
        if record is None or found is None or not complete:
            return _no_recording(call_sid)
        try:
            version = await asyncio.wait_for(in_object_io(found.version), READ_DEADLINE_S)
        except Exception as exc:  # the bucket is away: said so, in one line each side
            log.error("console: could not reach the recording of %s: %s", call_sid, described(exc))
            return JSONResponse(
                {"error": f"the recording of the call {call_sid} could not be reached"}, 503
            )
        return (record, found, version) if version is not None else _no_recording(call_sid)

    async def _call_recording(self, request: Request, call_sid: str) -> Response:
        """The bridge's recording of the call (RECORDING=bridge), in its file's format
        (WAV, FLAC or Ogg Opus): the browser can seek in it (range requests), behind the
        login. From object storage, streamed through the bridge."""
        recorded = await self._recorded_call(request, call_sid)
        if isinstance(recorded, Response):
            return recorded
        _, found, (_, size, etag) = recorded
        if isinstance(found, LocalRecording):
            return FileResponse(
                found.path,
                media_type=found.media_type,
                filename=found.name,
                content_disposition_type="inline",
                headers=dict(_SECURITY_HEADERS),
            )
        try:
            return await object_response(
                found, size, etag, request.headers.get("range"), _SECURITY_HEADERS
            )
        except Exception as exc:
            log.error("console: could not read the recording of %s: %s", call_sid, described(exc))
            return JSONResponse(
                {"error": f"the recording of the call {call_sid} could not be reached"}, 503
            )

    async def _call_waveform(self, request: Request, call_sid: str) -> Response:
        """The recording as a picture's data: {duration_s, pictured_s, buckets, full_scale,
        channels: {caller, assistant: [peak per bucket]}, markers: [{kind, start, end,
        label}]} (times in s on the call's clock, as the timeline's)."""
        recorded = await self._recorded_call(request, call_sid)
        if isinstance(recorded, Response):
            return recorded
        record, found, version = recorded
        try:
            peaks = await self._waveforms.peaks(found, version)
        except Exception as exc:  # not audio after all, or the bucket went away
            log.error("console: could not read the recording %s: %s", version[0], described(exc))
            return JSONResponse(
                {"error": f"the recording of the call {call_sid} could not be read"}, 500
            )
        marked = markers(record.timeline, until=max(peaks.duration_s, record.duration_ms / 1000))
        body = orjson.dumps(
            {
                "call_sid": record.call_sid,
                **peaks.as_json(),
                "markers": [marker.as_json() for marker in marked],
            }
        )
        return Response(body, media_type="application/json", headers=dict(_SECURITY_HEADERS))

    async def _delete_call(self, request: Request, call_sid: str) -> Response:
        """Forget a call: its record, timeline and recording (the operator's to delete)."""
        if not self._logged_in(request):
            return self._to_login(request)
        if self._cross_site(request):
            return self._page(pages.message_page("Delete", "Refused: another site."), 403)
        record = await self.store.delete(call_sid) if self.store is not None else None
        if record is None:
            page = pages.message_page("Call not found", f"No call with the sid {call_sid}.")
            return self._page(page, 404)
        await self.recordings.delete(record.recording)
        log.info("console: deleted call %s and its recording", call_sid)
        return RedirectResponse("/console/calls", status_code=303)

    async def _softphone_page(self, request: Request) -> Response:
        if not self._logged_in(request):
            return self._to_login(request)
        profiles = getattr(request.app.state, "profiles", None)
        names = profiles.names() if profiles is not None else (DEFAULT_PROFILE,)
        return self._page(pages.softphone_page(names))

    async def _static_file(self, name: str) -> Response:
        content = self._static.get(name)
        if content is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response(
            content,
            media_type=_STATIC_TYPES[name],
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    # --------------------------------------------------------------------------- JSON

    async def _api_live(self, request: Request) -> Response:
        if not self._logged_in(request):
            return self._unauthorized()
        calls = [call.as_json() for call in await self._live_calls()]
        return JSONResponse({"calls": calls}, headers={"Cache-Control": "no-store"})

    async def _api_softphone(self, request: Request) -> Response:
        """A softphone call's stream parameters, as Twilio would send them for a call: a
        fresh CallSid and StreamSid, and the stream token that admits exactly that call."""
        if not self._logged_in(request):
            return self._unauthorized()
        if self._cross_site(request):
            return JSONResponse({"error": "refused: another site"}, status_code=403)
        profile = request.query_params.get("profile")
        try:
            body = await read_body(request, MAX_FORM_BYTES)
        except RequestRefused as refused:
            return JSONResponse(
                {"error": refused.reason},
                status_code=refused.status,
                headers={"Connection": "close"},  # the rest of it is not received
            )
        if body.strip():
            try:
                data: Any = orjson.loads(body)
            except orjson.JSONDecodeError:
                return JSONResponse({"error": "the body must be a JSON object"}, status_code=422)
            if not isinstance(data, dict):
                return JSONResponse({"error": "the body must be a JSON object"}, status_code=422)
            profile = data.get("profile", profile)
        if profile is not None and not isinstance(profile, str):
            return JSONResponse({"error": "profile: must be a string"}, status_code=422)
        profile = (profile or "").strip()
        if profile and not _PROFILE_RE.fullmatch(profile):
            return JSONResponse(
                {"error": f"profile: at most {MAX_PROFILE_CHARS} letters, digits or _.:@+-"},
                status_code=422,
            )
        if not self.calls.accepting:
            return JSONResponse(
                {"error": "the bridge is not taking calls now (full, or shutting down)"},
                status_code=503,
            )
        call_sid = "CA" + secrets.token_hex(16)
        stream_sid = "MZ" + secrets.token_hex(16)
        parameters = {"CallSid": call_sid, "From": BROWSER_FROM, "To": BROWSER_TO}
        if profile:
            parameters[PROFILE_PARAMETER] = profile
        if self.tokens is not None:
            parameters[StreamTokens.PARAMETER] = self.tokens.issue(call_sid)
        self.calls.reserve(call_sid, "")  # as for a webhook: held until the stream comes
        log.info("console: softphone call %s requested", call_sid)
        return JSONResponse(
            {
                "ws_url": stream_url(self._public_base(request)),
                "call_sid": call_sid,
                "stream_sid": stream_sid,
                "parameters": parameters,
            },
            headers={"Cache-Control": "no-store"},
        )


def _no_recording(call_sid: str) -> JSONResponse:
    return JSONResponse({"error": f"no recording of the call {call_sid}"}, 404)


def client_address(request: Request) -> str:
    """Who a login comes from, for its throttle: the address the server sees (behind a
    proxy, the one its X-Forwarded-For names, believed only from FORWARDED_ALLOW_IPS). An
    IPv6 address counts by its /64: one host commonly holds a whole /64."""
    host = request.client.host if request.client else "?"
    if ":" in host:
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_network(host + "/64", strict=False))
    return host
