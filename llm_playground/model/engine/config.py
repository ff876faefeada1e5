"""`EngineConfig`: every knob of the engine in one dataclass, with a reason and a check for each.

Only settings and their validation live here (and `blocks_from_budget`: how many KV blocks the
configured budget buys); model/engine/engine.py reads them.
"""
from __future__ import annotations

from dataclasses import dataclass

from llm_playground.model.engine.attention_patterns import parse_pattern

CPU_KV_BYTES_DEFAULT = 512 * 2**20   # CPU: a fixed budget; RAM is shared with everything else


@dataclass
class EngineConfig:
    """Every knob of the engine, each with its reason (comments) and check (`__post_init__`)."""
    # 16 tokens: small enough that the last partly filled block wastes little (< 4% at prompt
    # lengths in the hundreds), large enough that block tables and kernel tiles stay short.
    block_size: int = 16
    # Physical blocks in the pool. None = derived from kv_cache_bytes (or the GPU's free memory).
    num_blocks: int | None = None
    # KV pool budget in bytes. None = CPU: CPU_KV_BYTES_DEFAULT; CUDA: gpu_memory_utilization.
    kv_cache_bytes: int | None = None
    # CUDA only: share of the GPU's total memory this process may fill (weights + KV pool), as in
    # vLLM; the KV pool gets what is left after the weights, minus the rest's headroom.
    gpu_memory_utilization: float = 0.9
    # Token budget of one step (decodes count one each): bounds a step's latency, so a long prompt
    # arriving mid-stream is split into chunks instead of stalling every running decode.
    max_num_batched_tokens: int = 2048
    # Sequences running at once (a forward batch holds at most this many).
    max_num_seqs: int = 64
    # Reuse K/V of identical prefixes across requests (and across turns of one chat).
    enable_prefix_caching: bool = True
    # Split prompts across steps to fit the budget; off = a prompt runs whole in one step.
    enable_chunked_prefill: bool = True
    # Default attention pattern for requests that name none (model/engine/attention_patterns.py syntax).
    attention: str = "dense"
    # Longest sequence for dense-like patterns; None = the model's trained context.
    max_model_len: int | None = None
    # CUDA only (ignored on CPU): replay pure-decode steps as CUDA graphs captured at start-up,
    # one per batch-size bucket (model/engine/cuda_graphs.py): a decode step launches ~300 kernels, and
    # without graphs the launches, not the GPU, set the speed. Validated on an H100 (the GPU
    # engine test gives the CPU engine's tokens with and without graphs, 2026-11-23).
    cuda_graphs: bool = True
    # Overlap scheduling (docs/RUNTIME.md): plan step N+1 while the device runs step N; the ids
    # of N reach the host one step late (stop rules and streaming apply them then, exactly).
    # On a GPU the host's scheduling, batch building and reports then hide behind the device's
    # work instead of adding to it. Exact (the same tokens as off, tested in float32): a token
    # drawn for a sequence that stopped on the token before is discarded, never emitted. Beam
    # search, the n > 1 fork of a prompt and repetition penalties wait for their ids (no
    # overlap for those rows). None = on for CUDA, off for the CPU: the CPU computes
    # synchronously, so there is nothing to hide and the late path would only add a step to the
    # time to first token and one discarded row per EOS; True runs the same path there (the
    # tests do), False is the classic plan, run, apply step.
    overlap: bool | None = None
    # Put one BlockInfo per physical block into every StepReport (the KV inspector needs it).
    # The cost grows with the pool (O(blocks) per step); throughput runs on a GPU-sized pool turn
    # it off and get the totals alone, computed from the owned blocks. cache_report() is always full.
    report_blocks: bool = True
    # Speculative decoding (model/engine/spec_config.py): off | ngram:K | draft:PATH:K |
    # draft:layers=L:K. Off by default: it pays only where proposals are often right (text that
    # copies its prompt: prompt lookup), and a draft model costs memory and load time. Exact:
    # greedy output equals off token for token (float32), sampling keeps the target's
    # distribution (rejection sampling). Its verify rows run without overlap.
    speculate: str = "off"
    # Used by Engine.from_path only: compute dtype (activations, KV) and device for load_model.
    dtype: str | None = None
    # How the projections are stored (model/weights/loader.resolve_weights): native | float |
    # int8 | int4; None = auto (CPU int8, CUDA float). Read by load_model, like dtype.
    weights: str | None = None
    # int8 / int4 group size (columns per scale), a multiple of 16; None = int8 per channel,
    # int4 128 (smaller where 128 does not divide a row).
    group_size: int | None = None
    # KV cache storage (model/network/kv_cache.py): None / "auto" = the compute dtype; "int8" or
    # "fp8" (e4m3, GPUs of compute capability 8.9+) = 8-bit codes with a float16 scale per
    # token and KV head: ~1.94x the blocks in the same budget (head dim 64), some accuracy.
    kv_dtype: str | None = None
    # None: CUDA where torch sees a GPU (what the engine is fast on), else the CPU; resolved by
    # weights/loader.resolve_device, which also refuses "cuda" on a machine without one.
    device: str | None = None

    def __post_init__(self) -> None:
        from llm_playground.model.engine.sampling_params import as_integer, as_number
        for name in ("block_size", "max_num_batched_tokens", "max_num_seqs"):
            setattr(self, name, as_integer(name, getattr(self, name)))
        for name in ("num_blocks", "kv_cache_bytes", "max_model_len"):
            if getattr(self, name) is not None:
                setattr(self, name, as_integer(name, getattr(self, name)))
        self.gpu_memory_utilization = as_number("gpu_memory_utilization", self.gpu_memory_utilization)
        for name in ("enable_prefix_caching", "enable_chunked_prefill", "cuda_graphs", "report_blocks"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.group_size is not None:
            self.group_size = as_integer("group_size", self.group_size)
            if self.group_size < 16 or self.group_size % 16:
                raise ValueError(f"group_size must be a multiple of 16, got {self.group_size}")
        if self.kv_dtype not in (None, "auto", "int8", "fp8"):
            raise ValueError(f"kv_dtype must be auto, int8 or fp8, got {self.kv_dtype!r}")
        for name in ("attention", "dtype", "device", "weights"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a str, got {value!r}")
        if self.attention is None:
            raise ValueError("attention must be a pattern name such as 'dense'")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        if self.kv_cache_bytes is not None and self.kv_cache_bytes < 1:
            raise ValueError(f"kv_cache_bytes must be >= 1, got {self.kv_cache_bytes}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")
        if self.overlap is not None and not isinstance(self.overlap, bool):   # 1 is not True
            raise ValueError(f"overlap must be True, False or None (auto), got {self.overlap!r}")
        parse_pattern(self.attention)   # raises PatternError (a ValueError) with a one-line message
        from llm_playground.model.engine.spec_config import parse_speculate
        parse_speculate(self.speculate)  # ValueError of one line naming the setting


def blocks_from_budget(cfg: EngineConfig, mc, dtype, device) -> int:
    """KV blocks that `cfg`'s budget buys for model config `mc` (kv_cache_bytes; on CUDA by
    default gpu_memory_utilization of the card minus what is used; on CPU a fixed budget)."""
    from llm_playground.model.network.kv_cache import bytes_per_block
    if cfg.kv_dtype == "fp8" and str(device).split(":")[0] == "cuda":
        import torch
        if torch.cuda.get_device_capability(device) < (8, 9):
            raise ValueError("kv_dtype fp8 needs a GPU with float8 (compute capability 8.9+, "
                             "e.g. L4, H100); use int8")
    per_block = bytes_per_block(mc.num_layers, mc.num_kv_heads, mc.head_dim, dtype, cfg.block_size,
                                cfg.kv_dtype)
    budget = cfg.kv_cache_bytes
    if budget is None and str(device).split(":")[0] == "cuda":
        import torch    # the one question to the device the engine asks: how much is free
        free, total = torch.cuda.mem_get_info(device)
        # What this process may still take: util x total minus what is already used by anyone.
        budget = int(cfg.gpu_memory_utilization * total - (total - free))
        if budget < per_block:
            raise RuntimeError(f"no GPU memory left for the KV cache (free {free / 2**30:.2f} GiB "
                               f"of {total / 2**30:.2f} GiB); lower the load or raise "
                               "gpu_memory_utilization")
    elif budget is None:
        budget = CPU_KV_BYTES_DEFAULT
    return max(1, budget // per_block)
