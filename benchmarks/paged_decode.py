"""Paged decode attention bandwidth: bytes of K+V read per second, ours vs contiguous SDPA vs a copy.

L shapes (32 heads, 8 KV heads, dim 128), bf16, one query token per sequence. Cases: batch 64 at
context 4k and batch 1 at context 32k, through block tables of block size 16, and the same at
block sizes 16..256 for the spread. Baselines in the same run: torch SDPA (default backend,
enable_gqa) on a contiguous (B, Hkv, ctx, D) cache, and a device-to-device copy of the same
number of bytes (its figure counts bytes read + written, the usual copy bandwidth). Every
time is the median of CUDA-graph replays (GPU time, no Python launch overhead), as in the engine.
`--sweep` times decode tile configurations first (the winner belongs in DECODE_CONFIGS).

    python benchmarks/paged_decode.py [--sweep] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import median_ms_graph as median_ms, paged_layout, print_table, write_json  # noqa: E402
from llm_playground.kernels.paged_decode import DECODE_CONFIGS, paged_decode  # noqa: E402

HQ, HKV, D = 32, 8, 128
SWEEP = [(16, 4, 3), (32, 4, 3), (64, 4, 3), (64, 4, 4), (64, 8, 3), (128, 4, 3), (128, 8, 3),
         (32, 2, 4), (64, 2, 3), (128, 4, 2)]


def kv_bytes(batch: int, ctx: int) -> int:
    return 2 * batch * ctx * HKV * D * 2


def ours(batch, ctx, block_size, config=None, num_splits=None):
    kc, vc, table = paged_layout([ctx] * batch, block_size, HKV, D, torch.bfloat16, "cuda")
    q = torch.randn(batch, HQ, D, dtype=torch.bfloat16, device="cuda")
    lens = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    return median_ms(lambda: paged_decode(q, kc, vc, lens, table, batch, ctx, D ** -0.5,
                                          out=out, config=config, num_splits=num_splits))


def sdpa(batch, ctx):
    q = torch.randn(batch, HQ, 1, D, dtype=torch.bfloat16, device="cuda")
    k = torch.randn(batch, HKV, ctx, D, dtype=torch.bfloat16, device="cuda")
    v = torch.randn(batch, HKV, ctx, D, dtype=torch.bfloat16, device="cuda")
    return median_ms(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))


def copy_tbps(nbytes):
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e12


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-splits", action="store_true",
                    help="batch 1 / 32k: time every sweep config at several split counts (twice)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("paged_decode: needs a CUDA GPU", file=sys.stderr)
        return 2
    sweep_rows = []
    if args.sweep:
        score = {}
        for cfg in SWEEP:
            for batch, ctx in ((64, 4096), (1, 32768)):
                try:
                    ms = ours(batch, ctx, 16, cfg)
                except Exception as e:
                    sweep_rows.append({"config": str(cfg), "batch": batch, "error": str(e)[:80]})
                    continue
                tb = kv_bytes(batch, ctx) / (ms * 1e-3) / 1e12
                sweep_rows.append({"config": str(cfg), "batch": batch, "ctx": ctx, "TBps": tb})
                score.setdefault(cfg, []).append(tb)
        best = max((c for c in score if len(score[c]) == 2), key=lambda c: min(score[c]))
        DECODE_CONFIGS[D] = best
        print("sweep best (max of the min over both cases):", best, score[best])
        print_table(sweep_rows, ["config", "batch", "ctx", "TBps", "error"])
    split_rows = []
    if args.sweep_splits:
        from llm_playground.kernels.paged_decode import choose_num_splits
        span = 32768 + 64
        print("heuristic splits at batch 1 / 32k:",
              choose_num_splits(1, HKV, span, torch.cuda.get_device_properties(0).multi_processor_count))
        for cfg in SWEEP:
            for splits in (8, 16, 32, 64, 128):
                tbs = []
                for _ in range(2):
                    try:
                        tbs.append(kv_bytes(1, 32768) / (ours(1, 32768, 16, cfg, splits) * 1e-3) / 1e12)
                    except Exception as e:
                        tbs.append(float("nan"))
                        print(cfg, splits, str(e)[:80])
                split_rows.append({"config": str(cfg), "splits": splits, "TBps_a": tbs[0],
                                   "TBps_b": tbs[1]})
        print_table(split_rows, ["config", "splits", "TBps_a", "TBps_b"])
    rows = []
    for batch, ctx in ((64, 4096), (1, 32768)):
        nbytes = kv_bytes(batch, ctx)
        ms_sdpa = sdpa(batch, ctx)
        copy = copy_tbps(nbytes)
        per_bs = {}
        for bs in (16, 32, 64, 128, 256):
            per_bs[bs] = nbytes / (ours(batch, ctx, bs) * 1e-3) / 1e12
        sd = nbytes / (ms_sdpa * 1e-3) / 1e12
        r = {"batch": batch, "ctx": ctx, "ours_bs16_TBps": per_bs[16], "sdpa_contig_TBps": sd,
             "copy_TBps": copy, "ratio_sdpa": per_bs[16] / sd,
             "spread_bs16_256": (max(per_bs.values()) - min(per_bs.values())) / max(per_bs.values())}
        r.update({f"ours_bs{bs}": v for bs, v in per_bs.items() if bs != 16})
        rows.append(r)
        print(r, flush=True)
    print_table(rows, ["batch", "ctx", "ours_bs16_TBps", "sdpa_contig_TBps", "copy_TBps",
                       "ratio_sdpa", "spread_bs16_256", "ours_bs32", "ours_bs64", "ours_bs128",
                       "ours_bs256"])
    write_json(args.json, "paged_decode", rows,
               {"unit": "TB/s of K+V read (copy: read+written)",
                "configs": {str(k): v for k, v in DECODE_CONFIGS.items()}, "sweep": sweep_rows,
                "split_sweep": split_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
