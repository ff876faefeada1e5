"""Build the real engine from the command-line flags, on the engine worker's thread.

`real_factory(args)` maps the flags to an EngineConfig at once (playground/engine_args.py, the
same function the `generate` / `chat` subcommands use; a bad value raises ValueError there, before
the app starts) and returns the factory the EngineWorker calls: it loads the model
(model.loader.load_model, which fetches the default model when no path is given; its weights'
fraction becomes the loading bar's percentage), builds
`Engine(loaded, config)` and describes the result as a `ModelInfo` for the header and the views.
Loading errors propagate as exceptions; the worker turns them into a one-line notification.
"""
from __future__ import annotations

from argparse import Namespace
from typing import Any, Callable

from llm_playground.playground.engine_args import engine_config_from_args
from llm_playground.playground.messages import ModelInfo


def describe(engine: Any, loaded: Any) -> ModelInfo:
    """The ModelInfo for a built engine and its loaded model."""
    mc = loaded.config
    cache = engine.cache_report()
    elem = loaded.dtype.itemsize if hasattr(loaded.dtype, "itemsize") else 2
    dtype = str(loaded.dtype).replace("torch.", "")
    fmt = getattr(loaded, "weight_format", "") or dtype
    if fmt == "native":                      # "Q4_1 g32, head ..." -> "Q4_1"
        fmt = (getattr(loaded, "weights", "") or "native").split()[0].rstrip(",")
    kv = getattr(getattr(engine, "runner", None), "kv", None)
    kv_quant = bool(getattr(kv, "quantised", False))
    if kv_quant:
        elem = kv.storage_dtype.itemsize
        shown = f"{fmt} weights, {dtype}, {kv.kv_dtype} KV"
    else:
        shown = dtype if fmt == dtype else f"{fmt} weights, {dtype} KV"
    return ModelInfo(
        name=loaded.name, path=str(loaded.path),
        device=str(loaded.device) + (f" ({choice})" if (choice := getattr(loaded, "device_choice", "")) else ""),
        dtype=shown, dtype_bytes=elem,
        num_layers=mc.num_layers, num_heads=mc.num_heads, num_kv_heads=mc.num_kv_heads,
        head_dim=mc.head_dim, max_position=mc.max_position, num_blocks=cache.num_blocks,
        block_size=cache.block_size, bytes_per_block=cache.bytes_per_block,
        tokenizer=loaded.tokenizer, chat_template=loaded.chat_template,
        pattern=str(engine.pattern), kv_dtype=kv.kv_dtype if kv_quant else "",
        kv_scale_bytes=2 if kv_quant else 0, speculate=str(getattr(engine, "speculate", "off")))


def real_factory(args: Namespace) -> Callable[[Callable[..., None]], tuple[ModelInfo, Any]]:
    """The factory the EngineWorker calls to load the model and build the engine. The
    EngineConfig is built here, at once, by engine_args.engine_config_from_args (the mapping the
    subcommands use too), so a bad flag value raises ValueError before the app starts."""
    config = engine_config_from_args(args)

    def factory(progress: Callable[..., None]) -> tuple[ModelInfo, Any]:
        """Load the model and build the engine (on the worker thread): (info, engine)."""
        from llm_playground.model.engine.engine import Engine
        from llm_playground.model.weights.loader import load_model

        from llm_playground.playground.parallel_engine import tensor_parallel_engine, tensor_parallel_size
        if tensor_parallel_size(args) > 1:
            engine = tensor_parallel_engine(args, config, progress)
            return describe(engine, engine.loaded), engine
        progress("loading the model")
        loaded = load_model(getattr(args, "model", None), config.dtype, config.device, progress=progress,
                            fraction=lambda f: progress("loading the weights", done=f, total=1.0),
                            weights=config.weights, group_size=config.group_size)
        progress("allocating the KV cache")
        engine = Engine(loaded, config)
        return describe(engine, loaded), engine

    return factory
