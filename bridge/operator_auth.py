"""The operator's HTTP APIs (`POST /calls`, `GET /metrics`): a bearer token, compared in
constant time, and their JSON errors."""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr


def bearer_ok(request: Request, secret: SecretStr) -> bool:
    """`Authorization: Bearer <secret>`, compared in constant time."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = secret.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)


def api_error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)
