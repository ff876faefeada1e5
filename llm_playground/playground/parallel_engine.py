"""`--tensor-parallel N`: build a tensor-parallel engine for the app and the subcommands.

`tensor_parallel_size(args)` reads the flag (1 when absent; a ValueError with one line for a
bad value), and `tensor_parallel_engine(args, config, say)` starts the ranks
(model/parallel/tp_engine.py: this process is rank 0 and spawns the others with
torch.multiprocessing, gloo on the CPU, NCCL on CUDA; under `torchrun` the environment names
the ranks and ranks != 0 never return from it) and registers its close at exit. The engine it
returns is an Engine (same API), so `generate`, `chat` and the app drive it unchanged. This
module does not parse flags (engine_args.py adds --tensor-parallel) or print errors.
"""
from __future__ import annotations

import atexit
from typing import Any, Callable


def tensor_parallel_size(args: Any) -> int:
    """--tensor-parallel as an int >= 1 (1 when not given)."""
    n = getattr(args, "tensor_parallel", None)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--tensor-parallel {n!r}: give a rank count of at least 1")
    return n


def tensor_parallel_engine(args: Any, config, say: Callable[[str], None] = lambda m: None):
    """Rank 0's TensorParallelEngine for --model / --dtype / --device and `config`."""
    from llm_playground.model.parallel.random_model import ModelSource
    from llm_playground.model.parallel.tp_engine import start_tensor_parallel
    n = tensor_parallel_size(args)
    say(f"starting {n} tensor-parallel ranks (each loads and slices the model)")
    source = ModelSource(path=getattr(args, "model", None), dtype=config.dtype,
                         weights=config.weights, group_size=config.group_size)
    engine = start_tensor_parallel(source, n, config)
    atexit.register(engine.close)
    return engine
