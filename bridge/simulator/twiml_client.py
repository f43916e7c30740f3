"""Twilio's side of the voice webhook: a signed request in, the `<Connect><Stream>` out.

HTTP goes through stdlib urllib in a worker thread, so the simulator adds no runtime
dependency beyond what the bridge already ships.
"""

from __future__ import annotations

import asyncio
import secrets
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http import HTTPStatus

from twilio.request_validator import RequestValidator

from bridge.simulator.simulator_options import SimulatorError

HTTP_TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-Twilio-Signature"


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def webhook_params(
    call_sid: str, account_sid: str, from_number: str, to_number: str
) -> dict[str, str]:
    """The fields Twilio sends when an inbound call starts ringing."""
    return {
        "CallSid": call_sid,
        "AccountSid": account_sid,
        "From": from_number,
        "To": to_number,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }


def signature_hint(status: int, signed: bool) -> str:
    """What to do about a refusal: a bridge with TWILIO_AUTH_TOKEN set answers 403 to a
    request without Twilio's signature, or signed with another token."""
    if status != HTTPStatus.FORBIDDEN:
        return ""
    if signed:
        return " - is --auth-token the bridge's TWILIO_AUTH_TOKEN?"
    return " - the bridge checks Twilio signatures: pass --auth-token with its TWILIO_AUTH_TOKEN"


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature for a request to `url` (form params for a POST, {} otherwise)."""
    return RequestValidator(auth_token).compute_signature(url, params)


@dataclass
class WebhookRequest:
    method: str
    url: str  # as requested, query string included for a GET
    body: bytes | None
    headers: dict[str, str]


def build_webhook_request(
    webhook_url: str, params: dict[str, str], auth_token: str | None, method: str = "POST"
) -> WebhookRequest:
    headers = {"User-Agent": "TwilioProxy/1.1 (phone-bridge simulator)", "Accept": "*/*"}
    if method.upper() == "GET":
        # A GET carries the fields in the query and is signed on the full URL with no params.
        sep = "&" if urllib.parse.urlsplit(webhook_url).query else "?"
        url = webhook_url + sep + urllib.parse.urlencode(params)
        body = None
        signed_params: dict[str, str] = {}
    else:
        url = webhook_url
        body = urllib.parse.urlencode(params).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        signed_params = params
    if auth_token:
        headers[SIGNATURE_HEADER] = sign(auth_token, url, signed_params)
    return WebhookRequest(method.upper(), url, body, headers)


@dataclass
class StreamTarget:
    """The `<Connect><Stream>` of a TwiML answer."""

    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    status_callback: str | None = None


def parse_twiml(text: str) -> StreamTarget:
    """Find `<Connect><Stream url=…>` and its `<Parameter>`s, rejecting what Twilio would."""
    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError as exc:
        raise SimulatorError(f"webhook answer is not valid TwiML XML ({exc})") from None
    if root.tag != "Response":
        raise SimulatorError(f"TwiML root element is <{root.tag}>, expected <Response>")
    stream = root.find("Connect/Stream")
    if stream is None:
        verbs = ", ".join(f"<{child.tag}>" for child in root) or "nothing"
        hint = (
            " (<Start><Stream> is one-way: no audio back)"
            if root.find("Start/Stream") is not None
            else ""
        )
        raise SimulatorError(f"TwiML has no <Connect><Stream>; it contains {verbs}{hint}")
    url = (stream.get("url") or "").strip()
    if not url:
        raise SimulatorError("TwiML <Stream> has no url attribute")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise SimulatorError(f"TwiML <Stream url={url!r}> is not an absolute wss:// URL")
    if parts.query or "?" in url:
        raise SimulatorError(
            f"TwiML <Stream url={url!r}> has a query string; Twilio rejects it (error 31920)"
            " - pass per-call data as <Parameter> instead"
        )
    parameters: dict[str, str] = {}
    for param in stream.findall("Parameter"):
        name = param.get("name")
        if name is None:
            raise SimulatorError("TwiML <Parameter> without a name")
        parameters[name] = param.get("value", "")
    return StreamTarget(
        url=url,
        parameters=parameters,
        name=stream.get("name"),
        status_callback=stream.get("statusCallback"),
    )


def _send(request: WebhookRequest) -> tuple[int, str, str]:
    req = urllib.request.Request(
        request.url, data=request.body, headers=request.headers, method=request.method
    )
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as response:
            charset = response.headers.get_content_charset() or "utf-8"
            return (
                response.status,
                response.headers.get("Content-Type", ""),
                response.read().decode(charset, errors="replace"),
            )
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", errors="replace").strip().replace("\n", " ")
        detail = f": {body[:200]}" if body else ""
        hint = signature_hint(exc.code, SIGNATURE_HEADER in request.headers)
        raise SimulatorError(
            f"webhook {request.url} answered HTTP {exc.code} {exc.reason}{detail}{hint}"
        ) from None
    except urllib.error.URLError as exc:
        raise SimulatorError(f"cannot reach webhook {request.url}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise SimulatorError(f"cannot reach webhook {request.url}: {exc}") from None


async def fetch_twiml(request: WebhookRequest) -> str:
    """Send the webhook request; return the TwiML text of a 2xx answer."""
    status, content_type, text = await asyncio.to_thread(_send, request)
    if not 200 <= status < 300:
        raise SimulatorError(f"webhook {request.url} answered HTTP {status}")
    if content_type and "xml" not in content_type.lower() and not text.lstrip().startswith("<"):
        raise SimulatorError(f"webhook answered {content_type!r}, not TwiML")
    return text
