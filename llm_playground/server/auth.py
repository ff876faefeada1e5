"""API-key check: with a key configured, every route but /health needs `Authorization: Bearer KEY`.

`check(headers, key)` returns None or the 401 APIError (missing header, wrong scheme, wrong key;
compared in constant time). The app's middleware (server/app.py) calls it before any route runs,
so a refused request reads no body and touches no engine. Nothing else lives here.
"""
from __future__ import annotations

import hmac

from llm_playground.server.errors import APIError

OPEN_PATHS = frozenset({"/health"})


def check(path: str, authorization: str | None, key: str | None) -> APIError | None:
    """None when the request may go on, else the 401 to answer."""
    if key is None or path in OPEN_PATHS:
        return None
    if not authorization:
        return APIError(401, "missing API key: send the header 'Authorization: Bearer <key>'",
                        code="invalid_api_key")
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return APIError(401, "the Authorization header must be 'Bearer <key>'",
                        code="invalid_api_key")
    if not hmac.compare_digest(given.strip().encode(), key.encode()):
        return APIError(401, "incorrect API key", code="invalid_api_key")
    return None
