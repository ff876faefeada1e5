"""Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}` with its status.

`APIError` is what route code raises; `error_response` renders one; `install_handlers(app)`
makes FastAPI's own failures (a body that is not JSON, a field of the wrong type, an unknown
route, an unexpected exception) answer in the same shape, one line naming the field, instead of
FastAPI's `{"detail": [...]}`. `from_engine(kind, message)` maps the engine's typed ErrorKind
(model/engine/outcomes.py) to a status. This module does not decide *when* a request is bad.
"""
from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_playground.model.engine.outcomes import ErrorKind

log = logging.getLogger("llm_playground.server")

# OpenAI's `type` per status family (what its API and vLLM send).
_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """A request the server refuses: status, one-line message, OpenAI `type`, `param`, `code`."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type_: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        """The JSON body: {"error": {...}}."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def error_response(err: APIError) -> JSONResponse:
    """The HTTP response for `err` (401 also says how to authenticate)."""
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def sse_error(err: APIError) -> bytes:
    """The error as a server-sent event: what a stream sends when a request fails after its
    headers went out (vLLM's convention), followed by `data: [DONE]`."""
    return b"data: " + json.dumps(err.body()).encode() + b"\n\ndata: [DONE]\n\n"


_ENGINE_STATUS = {ErrorKind.INVALID_REQUEST: 400, ErrorKind.CONTEXT_LENGTH_EXCEEDED: 400,
                  ErrorKind.KV_CACHE_TOO_SMALL: 400, ErrorKind.UNSUPPORTED: 400,
                  ErrorKind.OUT_OF_MEMORY: 503, ErrorKind.INTERNAL: 500,
                  ErrorKind.UNAVAILABLE: 503}


def from_engine(kind: ErrorKind | None, message: str | None) -> APIError:
    """The APIError for a request the engine finished with FinishReason.ERROR."""
    kind = ErrorKind(kind) if kind is not None else ErrorKind.INTERNAL
    return APIError(_ENGINE_STATUS[kind], message or str(kind), code=str(kind))


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "function-after",
              "function-before", "constrained-str"}


def _field(loc) -> str:
    """A pydantic location ('body', 'messages', 0, 'content') as 'messages[0].content'; the
    tags pydantic adds for union members ('list[int]', 'str') are left out."""
    out = ""
    for part in loc:
        if (part == "body" and not out) or (isinstance(part, str) and (
                part in _TYPE_TAGS or "[" in part or "," in part)):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def from_validation(errors: list[dict]) -> APIError:
    """One 400 for pydantic's errors: the first one's field and message (and how many more);
    a body that is not JSON at all says so."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    msg = first.get("msg", "invalid value")
    if first.get("type") == "json_invalid":
        return APIError(400, f"the body is not valid JSON: {msg}", code="invalid_json")
    if first.get("type") == "model_type" and not first.get("loc"):
        return APIError(400, "the body must be a JSON object", code="invalid_json")
    name = _field(first.get("loc", ()))
    text = f"{name}: {msg}" if name else msg
    fields = {_field(e.get("loc", ())) for e in errors}
    more = f" (and {len(fields) - 1} more field(s))" if len(fields) > 1 else ""
    return APIError(400, text + more, param=name or None, code="invalid_value")


def install_handlers(app: FastAPI) -> None:
    """Every error FastAPI or Starlette raises answers in the OpenAI shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(from_validation(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(APIError(exc.status_code, str(exc.detail), code=code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error in %s", request.url.path)
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return error_response(APIError(500, f"internal error: {type(exc).__name__}: {line}",
                                       code="internal"))
