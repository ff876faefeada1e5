"""`ServerConfig`: the HTTP server's knobs (not the engine's), each with a reason and a check.

The engine's settings stay in model/engine/config.py (EngineConfig); this module only holds
what the HTTP layer decides: where it listens, who may call it, how much it accepts. Nothing
here imports FastAPI or the engine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

API_KEY_ENV = "PLAYGROUND_API_KEY"


@dataclass
class ServerConfig:
    """Where the server listens and what it accepts (see each field's reason)."""
    # Loopback by default: a playground server is for this machine unless asked otherwise.
    host: str = "127.0.0.1"
    # vLLM's and SGLang's usual port, so client examples work unchanged.
    port: int = 8000
    # None = open. Set: every route but /health needs `Authorization: Bearer <key>`.
    api_key: str | None = None
    # Requests in the server at once (running + waiting in the engine); one more gets 503.
    # 1024 is four times the benchmark's 256 concurrent streams: only a real overload trips it.
    max_queue: int = 1024
    # Largest request body in bytes (413 beyond it). 1 MiB holds a prompt of the whole context
    # (8,192 tokens as a JSON id list is ~60 KB) many times over, and refuses a 10 MB upload
    # before it is read into memory.
    max_body_bytes: int = 2**20
    # The id clients send as `model` (and GET /v1/models lists); None = the loaded model's name.
    model_name: str | None = None
    # The inspector stream (/inspect/reports) sends at most this many reports a second: the same
    # rate as the in-process app's live pictures (playground/engine_worker.py).
    report_interval_s: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"host must be a non-empty str, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an integer in 0..65535, got {self.port!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ValueError("api_key must be a non-empty str or None")
        for name in ("max_queue", "max_body_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.model_name is not None and (not isinstance(self.model_name, str) or not self.model_name):
            raise ValueError("model_name must be a non-empty str or None")
        if not (isinstance(self.report_interval_s, (int, float)) and self.report_interval_s > 0):
            raise ValueError(f"report_interval_s must be > 0, got {self.report_interval_s!r}")


def api_key_from(flag: str | None) -> str | None:
    """The --api-key flag, else the PLAYGROUND_API_KEY environment variable, else None."""
    return flag or os.environ.get(API_KEY_ENV) or None
