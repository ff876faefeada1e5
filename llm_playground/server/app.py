"""The ASGI app around one engine, and the ways to run it (uvicorn in the foreground or a thread).

Stack: FastAPI on uvicorn. FastAPI (Starlette underneath) for routing, pydantic validation and
server-sent events through StreamingResponse, which cancels the stream's generator when the
client disconnects (the abort path); uvicorn because it is the ASGI server vLLM and SGLang ship
with, well kept, and runs on plain asyncio and h11 with no compiled extras.

`build_app(engine, config)` wires the pieces: the EngineBridge (server/bridge.py: the engine's
own thread, started and stopped with the app's lifespan), the metrics, the routes
(server/routes.py, server/inspect_stream.py), the OpenAI error shape (server/errors.py), and a
plain ASGI middleware (`Guard`) that checks the API key (server/auth.py) before any route runs
and counts responses by status. `serve(...)` runs it in the foreground (`playground serve`);
`ServerThread` runs it on a free port in a background thread (the tests, the benchmark). Either
can put the engine in a process of its own (`factory=`, server/engine_process.py) or run
data-parallel replicas behind the router (`factories=`, server/dp_bridge.py).
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from llm_playground.server import auth, inspect_stream, routes
from llm_playground.server.bridge import EngineBridge
from llm_playground.server.config import ServerConfig
from llm_playground.server.errors import install_handlers
from llm_playground.server.metrics import Metrics
from llm_playground.server.routes import ServerState


class Guard:
    """ASGI middleware: the API key before anything else, then the response's status counted."""

    def __init__(self, app, key: str | None, metrics: Metrics) -> None:
        self.app, self.key, self.metrics = app, key, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                       if k == b"authorization"), None)
        refused = auth.check(scope.get("path", ""), header, self.key)
        if refused is not None:
            body = json.dumps(refused.body()).encode()
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
            self.metrics.http_response(401)
            return None
        metrics = self.metrics

        async def counting_send(message):
            if message["type"] == "http.response.start":
                metrics.http_response(int(message["status"]))
            await send(message)

        return await self.app(scope, receive, counting_send)


def describe_engine(engine, model_name: str) -> dict:
    """The inspector's model description (report_codec.INFO_FIELDS) for a built engine."""
    loaded, mc = engine.loaded, engine.model_config
    cache = engine.cache_report()
    dtype = str(loaded.dtype).replace("torch.", "")
    fmt = getattr(loaded, "weight_format", "") or dtype
    return {"name": model_name, "path": str(loaded.path), "device": str(loaded.device),
            "dtype": dtype if fmt == dtype else f"{fmt} weights, {dtype} KV",
            "dtype_bytes": getattr(loaded.dtype, "itemsize", 2), "num_layers": mc.num_layers,
            "num_heads": mc.num_heads, "num_kv_heads": mc.num_kv_heads, "head_dim": mc.head_dim,
            "max_position": mc.max_position, "num_blocks": cache.num_blocks,
            "block_size": cache.block_size, "bytes_per_block": cache.bytes_per_block,
            "pattern": str(engine.pattern)}


def build_app(engine=None, config: ServerConfig | None = None, factory=None,
              factories=None) -> FastAPI:
    """The FastAPI app serving `engine` (its thread starts with the app's lifespan), or, with
    `factory` (a picklable callable returning an Engine), an engine built and stepped in a
    process of its own (server/engine_process.py; the model loads before this returns), or,
    with `factories` (one per replica), data-parallel replicas behind the prefix-aware router
    (server/dp_bridge.py)."""
    config = config or ServerConfig()
    metrics = Metrics()
    if factories is not None:
        from llm_playground.server.dp_bridge import DataParallelBridge
        from llm_playground.server.dp_metrics import DataParallelMetrics
        bridge = DataParallelBridge(list(factories), config.max_queue, config.report_interval_s)
        metrics = DataParallelMetrics(bridge)
        ds = bridge.launch()
        d = ds[0]
        name = config.model_name or d["name"]
        state = dict(tokenizer=d["tokenizer"], chat_template=d["chat_template"],
                     max_model_len=min(x["max_model_len"] for x in ds), vocab_size=d["vocab_size"],
                     num_blocks=min(x["num_blocks"] for x in ds), block_size=d["block_size"],
                     info={**d["info"], "name": name},
                     replica_info=[{**x["info"], "name": name} for x in ds])
    elif factory is not None:
        from llm_playground.server.engine_process import ProcessBridge
        bridge = ProcessBridge(factory, metrics, config.max_queue, config.report_interval_s)
        d = bridge.launch()
        name = config.model_name or d["name"]
        state = dict(tokenizer=d["tokenizer"], chat_template=d["chat_template"],
                     max_model_len=d["max_model_len"], vocab_size=d["vocab_size"],
                     num_blocks=d["num_blocks"], block_size=d["block_size"],
                     info={**d["info"], "name": name})
    else:
        bridge = EngineBridge(engine, metrics, config.max_queue)
        name = config.model_name or engine.loaded.name
        state = dict(tokenizer=engine.tokenizer, chat_template=engine.loaded.chat_template,
                     max_model_len=engine.max_model_len, vocab_size=engine.model_config.vocab_size,
                     num_blocks=engine.bm.num_blocks, block_size=engine.bm.block_size,
                     info=describe_engine(engine, name))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        bridge.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, bridge.stop)

    app = FastAPI(title="llm-playground", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = ServerState(bridge=bridge, config=config, metrics=metrics, model_name=name,
                                   created=int(time.time()), **state)
    install_handlers(app)
    app.include_router(routes.router)
    app.include_router(inspect_stream.router)
    app.add_middleware(Guard, key=config.api_key, metrics=metrics)
    return app


def serve(engine, config: ServerConfig, log_level: str = "info", factory=None,
          factories=None) -> None:
    """Run the server in the foreground until Ctrl-C (`playground serve`); `factory`: the
    engine in its own process, `factories`: data-parallel replicas (see build_app)."""
    import uvicorn
    uvicorn.run(build_app(engine, config, factory, factories), host=config.host, port=config.port,
                log_level=log_level, timeout_graceful_shutdown=5)


class ServerThread:
    """The server on a free port of `host`, in a background thread: `with ServerThread(engine)
    as srv: srv.url`. The socket is bound before the thread starts, so the port is known and
    connections wait in its backlog until uvicorn accepts them."""

    def __init__(self, engine=None, config: ServerConfig | None = None, log_level: str = "warning",
                 factory=None, factories=None) -> None:
        import uvicorn
        self.config = config or ServerConfig(port=0)
        self.app = build_app(engine, self.config, factory, factories)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.config.host, self.config.port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{self.config.host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level=log_level,
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="uvicorn", daemon=True)

    @property
    def state(self) -> ServerState:
        """The running app's ServerState (bridge, metrics, model limits)."""
        return self.app.state.server

    def start(self, timeout: float = 30.0) -> "ServerThread":
        """Start uvicorn on the bound socket; returns once it accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit (the engine stops with the app's lifespan) and wait."""
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
