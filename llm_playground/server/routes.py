"""The HTTP routes: /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics.

Each generation route reads the body itself (so a body over ServerConfig.max_body_bytes is a 413
before it is held in memory, and pydantic validates the JSON strictly: server/protocol.py),
checks what the engine would refuse later (unknown model 404; empty prompt, ids outside the
vocabulary, a prompt over the context or prompt + max_tokens over it: 400 with code
`context_length_exceeded`), and queues the request on the bridge (server/bridge.py; 503 when
the queue is full). It then waits for the first step's outputs while watching for the client to
leave, so an engine error found at admission still gets its status code; a stream goes on as
server-sent events (`data: {...}` per step, `data: [DONE]` at the end), several outputs that
arrived together written at once. A client that disconnects, streaming or not, aborts its
engine requests (their blocks are freed at once). What it does not do: sampling, tokenizing
beyond calling the tokenizer, or metrics arithmetic.
"""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError

from llm_playground.server.bridge import EngineBridge, EngineUnavailable, QueueFull
from llm_playground.server.errors import APIError, from_validation, sse_error
from llm_playground.server.protocol import ChatCompletionRequest, CompletionRequest
from llm_playground.server.responses import Choices

router = APIRouter()
MAX_PROMPTS = 256                   # prompts in one /v1/completions call
DRAIN_CAP = 64 * 2**20              # an oversized body is read (and dropped) up to this much,
                                    # so the client gets its 413 instead of a reset connection


@dataclass
class ServerState:
    """What the routes need: the bridge, the config, the model's name, tokenizer and limits."""
    bridge: EngineBridge
    config: Any                     # server/config.ServerConfig
    metrics: Any                    # server/metrics.Metrics
    model_name: str
    tokenizer: Any
    chat_template: str | None
    max_model_len: int
    vocab_size: int
    num_blocks: int
    block_size: int
    info: dict                      # the inspector's model description (server/inspect_stream.py)
    created: int
    replica_info: list | None = None   # data parallel: each replica's description (its device)


def state_of(request: Request) -> ServerState:
    """The ServerState of the app serving `request`."""
    return request.app.state.server


class ClientGone(Exception):
    """The client disconnected while its request was running."""


# ---- plain routes -------------------------------------------------------------------------
@router.get("/health")
async def health(request: Request):
    """GET /health: 200 while the engine runs, 503 when it does not. Data parallel: each
    replica's liveness; "degraded" while some are down, 503 once all are."""
    st = state_of(request)
    up = st.bridge.up() if hasattr(st.bridge, "up") else None
    if not st.bridge.alive:
        msg = "the engine thread is not running"
        if up is not None:
            msg = f"all {len(up)} data-parallel replicas are down"
        raise APIError(503, msg, code="engine_dead")
    if up is None:
        return {"status": "ok"}
    return {"status": "ok" if all(up) else "degraded", "replicas_alive": sum(up),
            "replicas": [{"replica": i, "alive": ok} for i, ok in enumerate(up)]}


@router.get("/v1/models")
async def models(request: Request):
    """GET /v1/models: the one served model."""
    st = state_of(request)
    return {"object": "list", "data": [_model_card(st)]}


@router.get("/v1/models/{model_id:path}")
async def model(request: Request, model_id: str):
    """GET /v1/models/{id}: the served model, or 404."""
    st = state_of(request)
    _check_model(st, model_id)
    return _model_card(st)


@router.get("/metrics")
async def metrics(request: Request):
    """GET /metrics: the Prometheus text (server/metrics.py)."""
    return PlainTextResponse(state_of(request).metrics.render(),
                             media_type="text/plain; version=0.0.4; charset=utf-8")


def _model_card(st: ServerState) -> dict:
    return {"id": st.model_name, "object": "model", "created": st.created,
            "owned_by": "llm-playground", "max_model_len": st.max_model_len}


def _check_model(st: ServerState, name: str) -> None:
    if name != st.model_name:
        raise APIError(404, f"the model {name!r} does not exist; this server serves "
                       f"{st.model_name!r} (GET /v1/models)", param="model", code="model_not_found")


# ---- generation ---------------------------------------------------------------------------
@router.post("/v1/completions")
async def completions(request: Request):
    """POST /v1/completions."""
    st = state_of(request)
    req = _parse(CompletionRequest, await read_body(request, st.config.max_body_bytes))
    _check_model(st, req.model)
    req.refuse_unsupported()
    prompts = _completion_prompts(st, req.prompt)
    max_tokens = req.max_tokens if req.max_tokens is not None else 16
    params = req.sampling_params(_check_length(st, prompts, max_tokens), req.logprobs)
    return await _generate(request, st, "completion", prompts, params, req.stream,
                           req.include_usage, req.logprobs)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    """POST /v1/chat/completions (the prompt through the model's chat template)."""
    st = state_of(request)
    req = _parse(ChatCompletionRequest, await read_body(request, st.config.max_body_bytes))
    _check_model(st, req.model)
    req.refuse_unsupported()
    ids = _chat_prompt(st, req)
    wanted = req.requested_max_tokens
    max_tokens = wanted if wanted is not None else max(st.max_model_len - len(ids), 1)
    k = (req.top_logprobs or 0) if req.logprobs else None
    params = req.sampling_params(_check_length(st, [ids], max_tokens), k)
    return await _generate(request, st, "chat", [ids], params, req.stream, req.include_usage, k)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 when it is over `limit` bytes (by Content-Length or as it arrives)."""
    declared = request.headers.get("content-length", "")
    too_big = declared.isdigit() and int(declared) > limit
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if too_big or size > limit:
            too_big = True
            if size > DRAIN_CAP:
                break
            continue
        chunks.append(chunk)
    if too_big:
        raise APIError(413, f"the request body is over the server's limit of {limit} bytes",
                       code="request_too_large")
    return b"".join(chunks)


def _parse(model, body: bytes):
    if not body.strip():
        raise APIError(400, "the request body is empty: send a JSON object", code="invalid_json")
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise from_validation(e.errors()) from None


def _completion_prompts(st: ServerState, prompt) -> list[list[int]]:
    if isinstance(prompt, str):
        prompts = [st.tokenizer.encode_ordinary(prompt)]
    elif prompt and isinstance(prompt[0], int):
        prompts = [list(prompt)]
    elif prompt and isinstance(prompt[0], str):
        prompts = [st.tokenizer.encode_ordinary(p) for p in prompt]
    else:
        prompts = [list(p) for p in prompt]
    if not prompts:
        raise APIError(400, "prompt: the list is empty", param="prompt")
    if len(prompts) > MAX_PROMPTS:
        raise APIError(400, f"prompt: at most {MAX_PROMPTS} prompts per request", param="prompt")
    for i, ids in enumerate(prompts):
        where = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
        if not ids:
            raise APIError(400, f"{where}: empty prompt (at least one token is needed)", param="prompt")
        bad = next((t for t in ids if not 0 <= t < st.vocab_size), None)
        if bad is not None:
            raise APIError(400, f"{where}: token id {bad} is outside the vocabulary "
                           f"(0..{st.vocab_size - 1})", param="prompt")
    return prompts


def _chat_prompt(st: ServerState, req: ChatCompletionRequest) -> list[int]:
    from llm_playground.model.engine.chat_template import encode_chat
    if not st.chat_template:
        raise APIError(400, "this model has no chat template: use /v1/completions",
                       param="messages", code="no_chat_template")
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in req.messages]
    try:
        return encode_chat(st.tokenizer, st.chat_template, messages)
    except ValueError as e:         # ChatTemplateError: one line naming the message
        raise APIError(400, str(e), param="messages") from None


def _check_length(st: ServerState, prompts: list[list[int]], max_tokens: int) -> int:
    """`max_tokens` when every prompt and its answer fit the context and the KV cache."""
    longest = max(len(p) for p in prompts)
    ctx = st.max_model_len
    if longest >= ctx:
        raise APIError(400, f"this model's maximum context length is {ctx} tokens; the prompt "
                       f"has {longest} (one more is needed to generate)", param="prompt",
                       code="context_length_exceeded")
    if longest + max_tokens > ctx:
        raise APIError(400, f"this model's maximum context length is {ctx} tokens; you asked "
                       f"for {longest + max_tokens} ({longest} in the prompt, {max_tokens} to "
                       f"generate): lower max_tokens", param="max_tokens",
                       code="context_length_exceeded")
    if -(-(longest + 1) // st.block_size) > st.num_blocks:
        raise APIError(400, f"the prompt of {longest} tokens needs more than the whole KV cache "
                       f"({st.num_blocks} blocks of {st.block_size} tokens)", param="prompt",
                       code="kv_cache_too_small")
    return max_tokens


async def _generate(request: Request, st: ServerState, kind: str, prompts, params, stream: bool,
                    include_usage: bool, k: int | None):
    prefix = uuid.uuid4().hex[:24]
    try:
        handle = st.bridge.submit(prompts, params, prefix)
    except QueueFull as e:
        raise APIError(503, str(e), code="queue_full") from None
    except EngineUnavailable as e:
        raise APIError(503, str(e), code="engine_unavailable") from None
    choices = Choices(kind, ("chatcmpl-" if kind == "chat" else "cmpl-") + prefix,
                      handle.request_ids, params.n, st.model_name, st.tokenizer,
                      sum(len(p) for p in prompts), k)
    queue = handle.queue
    streaming = False
    try:
        if not stream:
            async def collect():
                while not choices.done:
                    for out in await queue.get():
                        choices.add(out)
                return choices.response()
            return JSONResponse(await _until_disconnect(request, collect()))
        first = await _until_disconnect(request, queue.get())
        events = choices.chunk_events(first)        # an engine error here is still a status
        streaming = True
        return _Stream(lambda: st.bridge.close(handle, abort=not choices.done),
                       _events(st, handle, choices, events, include_usage),
                       media_type="text/event-stream",
                       headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    except ClientGone:
        return JSONResponse({}, status_code=499)     # nobody reads it
    finally:
        if not streaming:                             # the stream closes the handle itself
            st.bridge.close(handle, abort=not choices.done)


class _Stream(StreamingResponse):
    """A StreamingResponse that closes its request however the response ends, even when the
    client left before the body generator first ran (its `finally` would then never run)."""

    def __init__(self, on_close, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def _events(st: ServerState, handle, choices: Choices, first: bytes, include_usage: bool):
    """The SSE body after the first step's outputs (already rendered in `first`)."""
    queue = handle.queue
    try:
        if first:
            yield first
        while not choices.done:
            batch = [await queue.get()]
            while not queue.empty():                  # outputs that came together go together
                batch.append(queue.get_nowait())
            data = b"".join(choices.chunk_events(outs) for outs in batch)
            if data:
                yield data
        if include_usage:
            yield choices.usage_event()
        yield b"data: [DONE]\n\n"
    except APIError as e:
        yield sse_error(e)
    finally:                                          # also on cancellation (client gone)
        st.bridge.close(handle, abort=not choices.done)


async def _until_disconnect(request: Request, coro):
    """Await `coro` unless the client disconnects first (then ClientGone, `coro` cancelled)."""
    work = asyncio.ensure_future(coro)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()
        watch.cancel()
        raise
    if work in done:
        watch.cancel()
        return work.result()
    work.cancel()
    raise ClientGone()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
