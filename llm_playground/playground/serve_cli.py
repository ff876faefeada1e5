"""`playground serve`: its flags and the command (the server itself is llm_playground/server/).

`add_serve_parser(sub, add_engine_flags)` adds the subcommand with the shared model/engine flags
(playground/engine_args.py, the one flag-to-EngineConfig mapping) plus the server's own:
--host, --port, --api-key (or the PLAYGROUND_API_KEY environment variable), --max-queue,
--max-body, --served-model-name and --engine-process. `cmd_serve(args, build_engine)` builds the ServerConfig (a
bad value is one line, exit 1, through cli.main), loads the engine with cli's loader and runs
uvicorn in the foreground (with --engine-process the model loads in the engine's own
process instead: llm_playground/server/engine_process.py). FastAPI and uvicorn are imported only here, when the command runs.
"""
from __future__ import annotations

import argparse
import functools
import sys

from llm_playground.server.config import API_KEY_ENV, ServerConfig, api_key_from


def add_serve_parser(sub, add_engine_flags) -> argparse.ArgumentParser:
    """The `serve` subparser."""
    d = ServerConfig()
    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server on the engine")
    add_engine_flags(p, top=False)
    p.add_argument("--host", default=d.host, help=f"address to listen on ({d.host}: this machine only)")
    p.add_argument("--port", type=int, default=d.port, help=f"port ({d.port})")
    p.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer KEY' on every "
                   f"route but /health (default: ${API_KEY_ENV}, else open)")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help=f"requests in the server at once before 503 ({d.max_queue})")
    p.add_argument("--max-body", type=int, default=d.max_body_bytes, metavar="BYTES",
                   help=f"largest request body before 413 ({d.max_body_bytes})")
    p.add_argument("--served-model-name", default=None,
                   help="the model id clients send (default: the loaded model's name)")
    p.add_argument("--engine-process", action="store_true",
                   help="run the engine in a process of its own (the HTTP side then shares no GIL "
                        "with it: faster where the engine's host side sets the pace, e.g. a GPU)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (info: one line per request)")
    return p


def server_config_from_args(args) -> ServerConfig:
    """The ServerConfig the flags describe (ValueError, one line, for a bad value)."""
    return ServerConfig(host=args.host, port=args.port, api_key=api_key_from(args.api_key),
                        max_queue=args.max_queue, max_body_bytes=args.max_body,
                        model_name=args.served_model_name)


def cmd_serve(args, build_engine) -> int:
    """Load the engine (`build_engine(args)` -> (engine, seconds)) and serve until Ctrl-C."""
    config = server_config_from_args(args)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ValueError(f"`playground serve` needs fastapi and uvicorn ({e.name} is missing): "
                         "pip install fastapi uvicorn") from None
    from llm_playground.server.app import serve
    auth = "API key required" if config.api_key else "no API key"
    if getattr(args, "engine_process", False):
        print(f"starting the engine process; then serving on http://{config.host}:{config.port}/v1 "
              f"({auth}); Ctrl-C stops", file=sys.stderr, flush=True)
        serve(None, config, log_level=args.log_level, factory=functools.partial(engine_only, args))
        return 0
    engine, load_s = build_engine(args)
    name = config.model_name or engine.loaded.name
    print(f"serving {name!r} on http://{config.host}:{config.port}/v1 ({auth}; loaded in "
          f"{load_s:.1f} s); Ctrl-C stops", file=sys.stderr, flush=True)
    serve(engine, config, log_level=args.log_level)
    return 0


def engine_only(args):
    """The engine the flags describe, built in the engine process (`--engine-process`)."""
    from llm_playground.playground.cli import _engine
    return _engine(args)[0]
