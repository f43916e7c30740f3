"""Twilio's REST API, which is out of reach here: an HTTP client for the twilio SDK's seam
that answers like api.twilio.com and records every request."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from twilio.http import HttpClient
from twilio.http.response import Response


class RecordingTwilio(HttpClient):
    def __init__(self, status: int = 200, body: dict | None = None) -> None:
        self.requests: list[dict] = []
        self.status = status
        self.body = body or {"status": "completed"}

    def request(self, method, uri, params=None, data=None, headers=None, auth=None, **kw):  # type: ignore[no-untyped-def, override]
        self.requests.append(
            {
                "method": method,
                "path": urlsplit(uri).path,
                "data": data,
                "auth": auth,
                "at": time.monotonic(),
            }
        )
        return Response(self.status, json.dumps(self.body))
