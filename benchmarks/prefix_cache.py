"""Prefix caching and parallel sampling on the real engine.

Part 1: R requests (default 64) share a P-token prefix (default 1024) plus U own tokens (128).
They arrive one after another (each runs to its first token before the next is added, as chat
turns do), with prefix caching on and then off. Reports the hit rate (prompt tokens served from
the cache / prompt tokens) against the optimum (every request after the first reuses the prefix's
full blocks: (R - 1) x floor(P / BS) x BS / (R x (P + U))) and the mean time to first token; the
target is hit rate >= 90% of the optimum and TTFT(on) / TTFT(off) <= 1 - 0.8 x P / (P + U).

Part 2: one request with n = 4 parallel samples vs 4 independent requests of the same prompt
(prefix caching off, so nothing is shared by accident): peak KV bytes in use. Target: >= 50% less.

  python benchmarks/prefix_cache.py --model tiny --requests 8 --prefix 256 --own 32
  python benchmarks/prefix_cache.py                 # full scale, default model (slow on CPU)
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402
from benchmarks.engine_models import load  # noqa: E402


def engine(loaded, caching: bool, block_size: int, num_blocks: int):
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.engine.config import EngineConfig
    return Engine(loaded, EngineConfig(num_blocks=num_blocks, block_size=block_size,
                                       enable_prefix_caching=caching, max_num_batched_tokens=4096))


def ttft_run(loaded, a, caching: bool, prompts) -> tuple[float, float]:
    from llm_playground.model.engine.sampling_params import SamplingParams
    blocks = -(-(a.prefix + a.own) // a.block_size) * (a.requests + 2) + 64
    e = engine(loaded, caching, a.block_size, blocks)
    ttfts = []
    for p in prompts:
        got = []
        list(e.iter_outputs(p, SamplingParams(max_tokens=1, ignore_eos=True),
                      on_report=lambda r: got.extend(r.ttft_s.values())))
        ttfts.append(got[0])
    c = e.cache_report()
    hit = c.prefix_hits / c.prefix_queries if caching else 0.0
    # skip the first request (it computes the prefix either way) in the TTFT mean
    return hit, statistics.mean(ttfts[1:] if len(ttfts) > 1 else ttfts)


def parallel_sampling(loaded, a) -> dict:
    from llm_playground.model.engine.sampling_params import SamplingParams
    rng = random.Random(a.seed + 1)
    V = loaded.config.vocab_size
    prompt = [rng.randrange(V) for _ in range(a.prefix + a.own)]
    blocks = -(-(len(prompt) + a.new) // a.block_size) * 5 + 16
    peak = {}
    for mode in ("n=4", "4 independent"):
        e = engine(loaded, False, a.block_size, blocks)
        if mode == "n=4":
            e.add_request(prompt, SamplingParams(n=4, temperature=1.0, seed=0, max_tokens=a.new, ignore_eos=True))
        else:
            for i in range(4):
                e.add_request(prompt, SamplingParams(temperature=1.0, seed=i, max_tokens=a.new, ignore_eos=True))
        top = 0
        while e.has_unfinished():
            top = max(top, e.step().cache.kv_bytes_in_use)
        peak[mode] = top
    saving = 1 - peak["n=4"] / peak["4 independent"]
    return {"prompt_tokens": len(prompt), "new_tokens": a.new, "peak_kv_bytes_n4": peak["n=4"],
            "peak_kv_bytes_independent": peak["4 independent"], "saving_pct": 100 * saving,
            "target_met": saving >= 0.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="default | tiny | PATH")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--prefix", type=int, default=1024)
    ap.add_argument("--own", type=int, default=128)
    ap.add_argument("--new", type=int, default=32, help="new tokens per sample in part 2")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(RESULTS_DIR),
                    help="a file, or a folder for prefix_cache-<device>.json (default: benchmarks/results/)")
    a = ap.parse_args()
    loaded = load(None if a.model == "default" else a.model, a.dtype)
    rng = random.Random(a.seed)
    V = loaded.config.vocab_size
    prefix = [rng.randrange(V) for _ in range(a.prefix)]
    prompts = [prefix + [rng.randrange(V) for _ in range(a.own)] for _ in range(a.requests)]
    hit_on, ttft_on = ttft_run(loaded, a, True, prompts)
    _, ttft_off = ttft_run(loaded, a, False, prompts)
    optimum = (a.requests - 1) * (a.prefix // a.block_size * a.block_size) / (a.requests * (a.prefix + a.own))
    shared = a.prefix / (a.prefix + a.own)
    row = {"requests": a.requests, "prefix": a.prefix, "own": a.own, "hit_rate": hit_on,
           "optimum": optimum, "hit_vs_optimum": hit_on / optimum if optimum else None,
           "ttft_on_s": ttft_on, "ttft_off_s": ttft_off, "ttft_ratio": ttft_on / ttft_off,
           "ttft_target_ratio": 1 - 0.8 * shared,
           "target_met": hit_on >= 0.9 * optimum and ttft_on / ttft_off <= 1 - 0.8 * shared}
    print_table([row], list(row))
    par = parallel_sampling(loaded, a)
    print()
    print_table([par], list(par))
    write_json(a.json, "prefix_cache", [row, par], {"model": loaded.name})


if __name__ == "__main__":
    main()
