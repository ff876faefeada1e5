"""The engine flags of `playground` and the one mapping from them to an `EngineConfig`.

What it does:
- `add_engine_flags(parser, top=...)` adds the flags that the app (`playground` with no
  subcommand) and every subcommand (`generate`, `chat`) share: --model, --dtype, --device,
  --attention, --block-size, --kv-blocks, --kv-budget and --speculate, with one spelling, help text and
  default for all of them.
- `engine_config_from_args(args)` turns a parsed namespace into the `EngineConfig`
  (model/engine/config.py). A flag left out keeps the EngineConfig default, so the defaults live
  in one place. `FLAG_FIELDS` says which EngineConfig field each flag sets.
- `parse_bytes` reads --kv-budget sizes such as 512M or 2GiB.

What it does not do: load the model (--model is handed to model/weights/loader.load_model and
is no EngineConfig field; nor is --tensor-parallel, read by playground/parallel_engine.py),
build the Engine, or print errors: a bad value raises ValueError with
a one-line message, and playground/cli.py's `main` prints it as `playground: error: ...` with
exit status 1. Sampling flags (--temperature, --max-tokens, ...) are per subcommand and live in
cli.py. Nothing here imports torch until `engine_config_from_args` runs, so `--help` stays quick.
"""
from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from llm_playground.model.engine.config import EngineConfig

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30}

# argparse dest of each engine flag -> the EngineConfig field it sets (--model sets none).
FLAG_FIELDS: dict[str, str] = {
    "dtype": "dtype",
    "weights": "weights",
    "group_size": "group_size",
    "device": "device",
    "attention": "attention",
    "block_size": "block_size",
    "kv_blocks": "num_blocks",
    "kv_budget": "kv_cache_bytes",
    "kv_dtype": "kv_dtype",
    "speculate": "speculate",
}


def parse_bytes(value: Any) -> int | None:
    """512M, 2GiB, 1048576 -> bytes; None stays None. ValueError with the accepted forms."""
    if value is None or isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"--kv-budget {value!r}: use bytes or a size like 512M or 2GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


# How a flag's parsed value becomes its field's value (flags not listed pass through unchanged).
_CONVERT: dict[str, Callable[[Any], Any]] = {"kv_budget": parse_bytes}


def add_engine_flags(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """Add the model/engine flags to `parser`. They are accepted before or after a subcommand:
    the top-level parser (`top=True`) defaults every flag to None ("not given"); a subcommand's
    copy (`top=False`) uses SUPPRESS defaults so it does not overwrite a value given before the
    subcommand. The defaults in the help texts are EngineConfig's (tests check they agree)."""
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)  # noqa: E731
    parser.add_argument("--model", default=d(None), help="a .gguf file or a Hugging Face model "
                        "directory (default: SmolLM2-135M-Instruct, fetched once into the user cache)")
    parser.add_argument("--dtype", default=d(None), help="compute dtype: float32 (exact) | bfloat16 | "
                        "float16 (default bfloat16; int8, the old spelling, means --weights int8)")
    parser.add_argument("--weights", default=d(None), choices=("native", "float", "int8", "int4"),
                        help="how the weights are stored: native (a GGUF's Q4_0/Q4_1/Q8_0 as they "
                        "are) | float (dequantised to --dtype) | int8 | int4 (quantised at load) "
                        "(default: int8 on CPU, float on CUDA; float when --dtype is given)")
    parser.add_argument("--group-size", type=int, default=d(None), help="int8/int4 columns per "
                        "scale, a multiple of 16 (default: int8 per channel, int4 128)")
    parser.add_argument("--device", default=d(None), help="cpu or cuda[:N] (default: CUDA where "
                        "available, else cpu; the header says which)")
    parser.add_argument("--attention", default=d(None), metavar="PATTERN",
                        help="dense | local:W | atrous:K | sparse:W,K | streaming:S,W (default dense)")
    parser.add_argument("--block-size", type=int, default=d(None), help="KV block size in tokens (16)")
    parser.add_argument("--kv-blocks", type=int, default=d(None), help="number of KV blocks in the pool")
    parser.add_argument("--kv-budget", default=d(None), help="KV pool size, e.g. 512M or 2GiB")
    parser.add_argument("--tensor-parallel", type=int, default=d(None), metavar="N",
                        help="split the model over N ranks (processes; gloo on CPU, NCCL on "
                        "CUDA, one GPU each): docs/PARALLEL.md (default 1)")
    parser.add_argument("--kv-dtype", default=d(None), choices=("auto", "int8", "fp8"),
                        help="KV cache storage: auto (the compute dtype) | int8 | fp8 (e4m3, "
                        "newer GPUs); 8-bit keeps a float16 scale per token: ~2x the blocks")
    parser.add_argument("--speculate", default=d(None), metavar="SPEC",
                        help="speculative decoding: off | ngram:K (prompt lookup) | "
                        "draft:PATH:K (a smaller model) | draft:layers=L:K (the first L layers) "
                        "(default off)")


def engine_config_from_args(args: argparse.Namespace) -> "EngineConfig":
    """The EngineConfig the engine flags in `args` describe: each flag given (not None) sets its
    FLAG_FIELDS field, --kv-budget through `parse_bytes`; the rest keep EngineConfig's defaults.
    Attributes missing from `args` count as not given, so a hand-built Namespace works too.
    Raises ValueError (one line) for a bad --kv-budget or a value EngineConfig rejects."""
    from llm_playground.model.engine.config import EngineConfig
    fields: dict[str, Any] = {}
    for dest, field in FLAG_FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            fields[field] = _CONVERT.get(dest, lambda v: v)(value)
    return EngineConfig(**fields)
