"""`playground serve`: its flags and the command (the server itself is llm_playground/server/).

`add_serve_parser(sub, add_engine_flags)` adds the subcommand with the shared model/engine flags
(playground/engine_args.py, the one flag-to-EngineConfig mapping) plus the server's own:
--host, --port, --api-key (or the PLAYGROUND_API_KEY environment variable), --max-queue,
--max-body, --served-model-name, --engine-process and --data-parallel. `cmd_serve(args,
build_engine)` builds the ServerConfig (a bad value is one line, exit 1, through cli.main),
loads the engine with cli's loader and runs uvicorn in the foreground (with --engine-process the
model loads in the engine's own process instead: llm_playground/server/engine_process.py; with
--data-parallel N in N such processes behind the router: server/dp_bridge.py, devices by
`replica_devices`). FastAPI and uvicorn are imported only here, when the command runs.
"""
from __future__ import annotations

import argparse
import functools
import os
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
    p.add_argument("--data-parallel", type=int, default=1, metavar="N",
                   help="N engine replicas, each in its own process with its own KV pool, behind a "
                        "prefix-aware router (requests sharing a long prefix go to the same one, "
                        "else the least loaded); a replica that dies has its requests re-sent. "
                        "CUDA: replica i on cuda:i when there are >= N GPUs and --device names no "
                        "index, else all share the one device; CPU: all on the CPU, the cores "
                        "split between them (default 1: one engine)")
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
    n = data_parallel_size(args)
    if n > 1:
        devices = replica_devices(getattr(args, "device", None), n)
        threads = max(1, (os.cpu_count() or 1) // n) if devices[0] == "cpu" else None
        where = ", ".join(devices) if len(set(devices)) > 1 else f"all on {devices[0]}"
        print(f"starting {n} engine replicas ({where}{f', {threads} thread(s) each' if threads else ''}); "
              f"then serving on http://{config.host}:{config.port}/v1 ({auth}); Ctrl-C stops",
              file=sys.stderr, flush=True)
        serve(None, config, log_level=args.log_level,
              factories=[functools.partial(replica_engine, args, d, threads) for d in devices])
        return 0
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


def data_parallel_size(args) -> int:
    """--data-parallel as an int >= 1; ValueError (one line) for a bad value or for one
    combined with --tensor-parallel."""
    n = getattr(args, "data_parallel", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--data-parallel {n!r}: give a replica count of at least 1")
    if n > 1 and (getattr(args, "tensor_parallel", None) or 1) > 1:
        raise ValueError("--data-parallel with --tensor-parallel is not supported: choose one")
    return n


def replica_devices(device: str | None, n: int) -> list[str]:
    """Each replica's device: the CPU for all when --device is cpu (or no CUDA); cuda:i when
    CUDA is asked for (or the default and present) without an index and there are >= n GPUs;
    else all n share the one device asked for (cuda, cuda:K)."""
    import torch
    if device is not None and not device.startswith(("cuda", "auto")):
        return [device] * n
    if not torch.cuda.is_available():
        if device is not None and device.startswith("cuda"):
            return [device] * n                  # the engine says there is no CUDA
        return ["cpu"] * n
    if device in (None, "auto", "cuda") and torch.cuda.device_count() >= n:
        return [f"cuda:{i}" for i in range(n)]
    return [device if device not in (None, "auto") else "cuda"] * n


def replica_engine(args, device: str, threads: int | None):
    """One data-parallel replica's engine, built in its process: the flags with --device
    replaced by the replica's, on `threads` torch threads (CPU)."""
    if threads:
        import torch
        torch.set_num_threads(threads)
    return engine_only(argparse.Namespace(**{**vars(args), "device": device}))
