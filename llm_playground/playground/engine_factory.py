"""Build the real engine from the command-line flags, on the engine worker's thread.

`real_factory(args)` returns the factory the EngineWorker calls: it loads the model
(model.loader.load_model, which fetches the default model when no path is given), builds
`Engine(loaded, EngineConfig(...))` from --block-size, --kv-blocks / --kv-budget and --attention,
and describes the result as a `ModelInfo` for the header and the views. Loading errors propagate
as exceptions; the worker turns them into a one-line notification.
"""
from __future__ import annotations

import re
from argparse import Namespace
from typing import Any, Callable

from llm_playground.playground.messages import ModelInfo

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30}


def parse_bytes(value: Any) -> int | None:
    """512M, 2GiB, 1048576 -> bytes; None stays None. ValueError with the accepted forms."""
    if value is None or isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"--kv-budget {value!r}: use bytes or a size like 512M or 2GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def describe(engine: Any, loaded: Any) -> ModelInfo:
    mc = loaded.config
    cache = engine.cache_report()
    elem = loaded.dtype.itemsize if hasattr(loaded.dtype, "itemsize") else 2
    dtype = str(loaded.dtype).replace("torch.", "")
    fmt = getattr(loaded, "weight_format", "") or dtype
    return ModelInfo(
        name=loaded.name, path=str(loaded.path), device=str(loaded.device),
        dtype=dtype if fmt == dtype else f"{fmt} weights, {dtype} KV", dtype_bytes=elem,
        num_layers=mc.num_layers, num_heads=mc.num_heads, num_kv_heads=mc.num_kv_heads,
        head_dim=mc.head_dim, max_position=mc.max_position, num_blocks=cache.num_blocks,
        block_size=cache.block_size, bytes_per_block=cache.bytes_per_block,
        tokenizer=loaded.tokenizer, chat_template=loaded.chat_template,
        pattern=str(engine.pattern))


def real_factory(args: Namespace) -> Callable[[Callable[..., None]], tuple[ModelInfo, Any]]:
    def factory(progress: Callable[..., None]) -> tuple[ModelInfo, Any]:
        from llm_playground.model.engine.engine import Engine
        from llm_playground.model.engine.config import EngineConfig
        from llm_playground.model.weights.loader import load_model

        fields: dict[str, Any] = {}
        if getattr(args, "block_size", None) is not None:
            fields["block_size"] = args.block_size
        if getattr(args, "kv_blocks", None) is not None:
            fields["num_blocks"] = args.kv_blocks
        if getattr(args, "kv_budget", None) is not None:
            fields["kv_cache_bytes"] = parse_bytes(args.kv_budget)
        if getattr(args, "attention", None):
            fields["attention"] = args.attention
        config = EngineConfig(device=getattr(args, "device", None) or "cpu",
                              dtype=getattr(args, "dtype", None), **fields)
        progress("loading the model")
        loaded = load_model(getattr(args, "model", None), config.dtype, config.device, progress=progress)
        progress("allocating the KV cache")
        engine = Engine(loaded, config)
        return describe(engine, loaded), engine

    return factory
