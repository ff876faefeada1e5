"""Attention time per step for each attention pattern at a 32k context, against dense (issue 5).

For every pattern of model/engine/attention_patterns.py (dense, local, atrous, local + atrous, StreamingLLM) the
paged attention kernels (kernels.dispatch.paged_attention: Triton on CUDA) run one engine step
at a 32k-token context, through block tables of block 16, bf16:
- decode: a batch of one-token queries at position 32k (batch 1 and batch 16);
- chunk: one 2,048-token prefill chunk whose last token sits at position 32k (chunked prefill).
Sliding patterns (local, StreamingLLM) get the holes the engine leaves: the blocks
`freeable_blocks` names are -1 in the table, as after eviction. Shapes: Llama-3-8B attention
(32 heads, 8 KV heads, dim 128) and SmolLM2-135M's (9 / 3 / 64). Times are CUDA-graph replays
(GPU time); the ratio is dense time / pattern time (above 1 = faster than dense).
keys_seen_pct: the share of the 32k keys the last query may see under the pattern.

    python benchmarks/pattern_attention.py [--json out.json] [--ctx 32768]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import median_ms_graph, paged_layout, print_table, write_json  # noqa: E402
from llm_playground.kernels.dispatch import paged_attention  # noqa: E402
from llm_playground.model.engine.attention_patterns import freeable_blocks, parse_pattern  # noqa: E402

PATTERNS = ["dense", "local:4096", "atrous:8", "sparse:4096,8", "streaming:4,4096"]
SHAPES = {"8B": (32, 8, 128), "135M": (9, 3, 64)}
BLOCK = 16


def step_inputs(shape, ctx, q_lens, spec, device):
    """q, caches, and the batch tensors of one step: len(q_lens) sequences at context ctx."""
    hq, hkv, d = shape
    B = len(q_lens)
    k_cache, v_cache, table = paged_layout([ctx] * B, BLOCK, hkv, d, torch.bfloat16, device)
    holes = list(freeable_blocks(spec, ctx - max(q_lens), BLOCK))
    if holes:
        table[:, holes] = -1                                   # evicted blocks, as the engine frees them
    T = sum(q_lens)
    q = torch.randn(T, hq, d, dtype=torch.bfloat16, device=device)          # (T, Hq, D)
    cu = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0)), dtype=torch.int32, device=device)
    lens = torch.full((B,), ctx, dtype=torch.int32, device=device)
    num_decodes = B if max(q_lens) == 1 else 0
    return q, k_cache, v_cache, cu, lens, table, max(q_lens), num_decodes, bool(holes)


def time_step(shape, ctx, q_lens, spec, device):
    q, kc, vc, cu, lens, table, max_q, num_decodes, holes = step_inputs(shape, ctx, q_lens, spec,
                                                                        device)
    out = torch.empty_like(q)
    d = shape[2]
    fn = lambda: paged_attention(q, kc, vc, cu, lens, table, max_q, ctx, d ** -0.5,  # noqa: E731
                                 spec, num_decodes, out, holes=holes)
    if device == "cpu":
        import time
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    return median_ms_graph(fn)


def last_query_density(spec, ctx: int) -> float:
    """Percent of the keys 0..ctx-1 the query at position ctx-1 may see (what a decode reads)."""
    pos = torch.arange(ctx)
    return 100.0 * float(spec.allowed(torch.tensor([[ctx - 1]]), pos[None, :]).float().mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--ctx", type=int, default=32768)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny context on CPU (reference path)")
    args = ap.parse_args(argv)
    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("pattern_attention: needs a CUDA GPU (or --cpu-smoke)", file=sys.stderr)
        return 2
    ctx, chunk = (512, 64) if args.cpu_smoke else (args.ctx, args.chunk)
    steps = {"decode b1": [1], "decode b16": [1] * 16, f"chunk {chunk}": [chunk]}
    rows = []
    for shape_name, shape in SHAPES.items():
        for step_name, q_lens in steps.items():
            dense_ms = None
            for text in PATTERNS:
                text = text.replace("4096", str(ctx // 8))       # window = 1/8 of the context
                spec = parse_pattern(text).spec
                ms = time_step(shape, ctx, q_lens, spec, device)
                dense_ms = ms if dense_ms is None else dense_ms
                rows.append({"shape": shape_name, "step": step_name, "pattern": str(text),
                             "keys_seen_pct": last_query_density(spec, ctx), "ms": ms, "speedup_vs_dense": dense_ms / ms})
                print(rows[-1], flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
    print_table(rows, ["shape", "step", "pattern", "keys_seen_pct", "ms", "speedup_vs_dense"])
    write_json(args.json, "pattern_attention", rows,
               {"unit": "ms per step (CUDA-graph replay median)", "ctx": ctx, "block": BLOCK})
    return 0


if __name__ == "__main__":
    sys.exit(main())
