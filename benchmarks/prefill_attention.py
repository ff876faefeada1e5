"""Prefill attention TFLOP/s: our Triton flash prefill vs SDPA.

Ours runs two ways: "packed", the path the model takes for a prompt (the new tokens' K/V read
from the batch's packed tensors, TMA tensor descriptors on Hopper; "packed_ptr" is the same with
plain pointer loads), and "table", every key gathered through block tables (block 16 and 256), the
path of a chunk after a cached prefix. The ratios use "packed".

Shapes S = (9 heads, 3 KV heads, dim 64) and L = (32, 8, 128), sequence lengths N in {1k, 4k,
16k}, bf16, causal and full; about 16k tokens per batch so every size fills the GPU. Baselines:
torch SDPA with its default backend and with the flash backend only, on contiguous (B, H, N, D)
tensors with enable_gqa. FLOPs: 4 * N * N * D * Hq per sequence, halved for causal (the
convention of FlashAttention's papers), the same count for every implementation.
Timing: every call is replayed from a CUDA graph (triton's do_bench_cudagraph), so the figures
are GPU time, not Python launch time; at N=1k on shape S a whole batch runs in about 50 us,
less than one eager launch of our kernel costs the host, so eager timing measured the launch
(the "_eager" columns keep that figure for ours and SDPA's default).
`--sweep` times a list of tile configurations first and reports the best (the one to keep in
kernels/prefill_configs.py PREFILL_CONFIGS).

    python benchmarks/prefill_attention.py [--sweep] [--json out.json] [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import median_ms, median_ms_graph, paged_layout, print_table, write_json  # noqa: E402
from llm_playground.kernels.flash_prefill import flash_prefill  # noqa: E402
from llm_playground.kernels.prefill_configs import PACKED_CONFIGS, PREFILL_CONFIGS  # noqa: E402

SHAPES = {"S": (9, 3, 64), "L": (32, 8, 128)}
SWEEP_PACKED = [(128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 4, 3), (128, 64, 8, 3),
                (128, 128, 4, 3), (128, 64, 4, 4), (64, 64, 4, 3), (64, 128, 4, 3), (128, 32, 4, 3),
                (128, 128, 8, 4), (128, 64, 8, 4), (256, 64, 8, 3)]
SWEEP = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3),
         (128, 64, 8, 4), (64, 128, 4, 3), (128, 64, 4, 4), (128, 128, 4, 3), (128, 128, 8, 4),
         (64, 64, 4, 4), (256, 64, 8, 3)]


def make_inputs(shape, n, tokens, block_size, dtype=torch.bfloat16):
    hq, hkv, d = shape
    b = max(1, tokens // n)
    k_cache, v_cache, table = paged_layout([n] * b, block_size, hkv, d, dtype, "cuda")
    q = torch.randn(b * n, hq, d, dtype=dtype, device="cuda")
    cu = torch.arange(0, (b + 1) * n, n, dtype=torch.int32, device="cuda")
    ctx = torch.full((b,), n, dtype=torch.int32, device="cuda")
    return b, q, k_cache, v_cache, cu, ctx, table


def ours(shape, n, causal, block_size, tokens, config=None, packed=None, timer=median_ms_graph,
         poly_exp=None):
    """packed None: keys through the table; "tma" / "ptr": the new tokens' K/V from packed
    tensors (k contiguous, v a slice of a fused q|k|v buffer, as in the model)."""
    from llm_playground.kernels import flash_prefill as fp
    hq, hkv, d = shape
    b, q, kc, vc, cu, ctx, table = make_inputs(shape, n, tokens, block_size)
    out = torch.empty_like(q)
    k_new = v_new = None
    if packed is not None:
        k_new = torch.randn(q.shape[0], hkv, d, dtype=q.dtype, device="cuda")
        qkv = torch.randn(q.shape[0], hq + 2 * hkv, d, dtype=q.dtype, device="cuda")
        v_new = qkv[:, hq + hkv:]
    # holes=False: dense tables without holes, as the engine tells the kernel for such batches
    fn = lambda: flash_prefill(q, kc, vc, cu, ctx, table, n, d ** -0.5, out=out,  # noqa: E731
                               config=config, causal=causal, holes=False, k_new=k_new, v_new=v_new,
                               prefix=False, poly_exp=poly_exp)
    with fp.tma_enabled(packed == "tma"):
        return b, timer(fn)


def sdpa(shape, n, causal, tokens, backend=None, timer=median_ms_graph):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    hq, hkv, d = shape
    b = max(1, tokens // n)
    q = torch.randn(b, hq, n, d, dtype=torch.bfloat16, device="cuda")
    k = torch.randn(b, hkv, n, d, dtype=torch.bfloat16, device="cuda")
    v = torch.randn(b, hkv, n, d, dtype=torch.bfloat16, device="cuda")

    def fn():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    if backend is None:
        return timer(fn)
    be = {"flash": SDPBackend.FLASH_ATTENTION}[backend]
    try:
        with sdpa_kernel([be]):
            return timer(fn)
    except RuntimeError:
        # This backend refuses GQA on this torch: give it K/V repeated to Hq heads (as it would need).
        k2, v2 = k.repeat_interleave(hq // hkv, 1), v.repeat_interleave(hq // hkv, 1)
        with sdpa_kernel([be]):
            return timer(lambda: F.scaled_dot_product_attention(q, k2, v2, is_causal=causal))


SWEEP_SHORT = [(128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 4, 3), (128, 64, 8, 3),
               (128, 64, 4, 2), (64, 64, 4, 3), (64, 64, 4, 2), (64, 128, 4, 3), (64, 128, 4, 2),
               (64, 32, 4, 3), (128, 32, 4, 3), (64, 64, 8, 3)]


def sweep_short(tokens: int, ns=(1024,), shapes=tuple(SHAPES),
                causals=(True, False), configs=None, poly=False) -> list[dict]:
    """The packed path's tiles at given lengths (causal and full) against SDPA's default: the
    candidates for kernels/prefill_configs.py SHORT_PACKED_CONFIGS (and PACKED_CONFIGS)."""
    rows = []
    for name, n, causal in ((a, b, c) for a in shapes for b in ns for c in causals):
        shape = SHAPES[name]
        b = max(1, tokens // n)
        base = tflops(shape, n, b, causal, sdpa(shape, n, causal, tokens))
        best = None
        for cfg, pe in ((c, p) for c in (configs or SWEEP_SHORT)
                        for p in ((False, True) if poly else (False,))):
            try:
                _, ms = ours(shape, n, causal, 16, tokens, cfg, "tma", poly_exp=pe)
            except Exception as e:  # a config the compiler refuses (shared memory)
                rows.append({"shape": name, "N": n, "causal": causal, "config": str(cfg),
                             "error": str(e)[:80]})
                continue
            t = tflops(shape, n, b, causal, ms)
            rows.append({"shape": name, "N": n, "causal": causal, "config": str(cfg),
                         "poly_exp": pe, "tflops": t, "ratio_default": t / base})
            if best is None or t > best[2]:
                best = (cfg, pe, t)
        print(f"sweep-short {name} N={n} causal={causal}: best {best}, sdpa {base:.0f}",
              flush=True)
    print_table(rows, ["shape", "N", "causal", "config", "poly_exp", "tflops", "ratio_default",
                       "error"])
    return rows


def tflops(shape, n, b, causal, ms):
    hq, _, d = shape
    flops = 4.0 * b * n * n * d * hq * (0.5 if causal else 1.0)
    return flops / (ms * 1e-3) / 1e12


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--quick", action="store_true", help="N=1k only (a smoke run)")
    ap.add_argument("--sweep-short", action="store_true",
                    help="only sweep the packed path's tiles at --sweep-n (causal and full), exit")
    ap.add_argument("--sweep-n", type=int, nargs="+", default=[1024])
    ap.add_argument("--sweep-shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--sweep-causal", choices=["both", "causal", "full"], default="both")
    ap.add_argument("--sweep-configs", nargs="+", help="tiles as BM,BN,warps,stages")
    ap.add_argument("--poly-exp", action="store_true",
                    help="sweep each tile with and without the polynomial exp2 (bf16 packed)")
    ap.add_argument("--tokens", type=int, default=16384)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("prefill_attention: needs a CUDA GPU", file=sys.stderr)
        return 2
    sweep_rows = []
    if args.sweep_short:
        causals = {"both": (True, False), "causal": (True,), "full": (False,)}[args.sweep_causal]
        configs = [tuple(int(v) for v in c.split(",")) for c in args.sweep_configs or []]
        rows = sweep_short(args.tokens, args.sweep_n, args.sweep_shapes, causals, configs,
                           args.poly_exp)
        write_json(args.json, "prefill_sweep_short", rows, {"unit": "TFLOP/s"})
        return 0
    if args.sweep:
        for path, grid, table in (("packed", SWEEP_PACKED, PACKED_CONFIGS),
                                  ("table", SWEEP, PREFILL_CONFIGS)):
            for name, shape in SHAPES.items():
                best = None
                for cfg in grid:
                    try:
                        _, ms = ours(shape, 4096, True, 16, args.tokens, cfg,
                                     "tma" if path == "packed" else None)
                    except Exception as e:  # a config the compiler refuses (shared memory)
                        sweep_rows.append({"path": path, "shape": name, "config": str(cfg),
                                           "error": str(e)[:80]})
                        continue
                    b = max(1, args.tokens // 4096)
                    t = tflops(shape, 4096, b, True, ms)
                    sweep_rows.append({"path": path, "shape": name, "config": str(cfg), "tflops": t})
                    if best is None or t > best[1]:
                        best = (cfg, t)
                print(f"sweep {path} {name}: best {best}", flush=True)
                if best:
                    table[shape[2]] = best[0]
        print_table(sweep_rows, ["path", "shape", "config", "tflops", "error"])
    rows = []
    for name, shape in SHAPES.items():
        for n in ([1024] if args.quick else [1024, 4096, 16384]):
            for causal in (True, False):
                b, ms_pk = ours(shape, n, causal, 16, args.tokens, packed="tma")
                _, ms_pp = ours(shape, n, causal, 16, args.tokens, packed="ptr")
                _, ms16 = ours(shape, n, causal, 16, args.tokens)
                _, ms256 = ours(shape, n, causal, 256, args.tokens)
                ms_def = sdpa(shape, n, causal, args.tokens)
                ms_fl = sdpa(shape, n, causal, args.tokens, "flash")
                _, ms_pk_eager = ours(shape, n, causal, 16, args.tokens, packed="tma",
                                      timer=median_ms)
                ms_def_eager = sdpa(shape, n, causal, args.tokens, timer=median_ms)
                r = {"shape": name, "N": n, "batch": b, "causal": causal,
                     "ours_packed": tflops(shape, n, b, causal, ms_pk),
                     "ours_packed_ptr": tflops(shape, n, b, causal, ms_pp),
                     "ours_table_bs16": tflops(shape, n, b, causal, ms16),
                     "ours_table_bs256": tflops(shape, n, b, causal, ms256),
                     "sdpa_default": tflops(shape, n, b, causal, ms_def),
                     "sdpa_flash": tflops(shape, n, b, causal, ms_fl),
                     "ours_packed_eager": tflops(shape, n, b, causal, ms_pk_eager),
                     "sdpa_default_eager": tflops(shape, n, b, causal, ms_def_eager)}
                r["ratio_default"] = r["ours_packed"] / r["sdpa_default"]
                r["ratio_flash"] = r["ours_packed"] / r["sdpa_flash"]
                r["table_ratio_default"] = r["ours_table_bs16"] / r["sdpa_default"]
                rows.append(r)
                print(r, flush=True)
    cols = ["shape", "N", "batch", "causal", "ours_packed", "ours_packed_ptr", "ours_table_bs16",
            "ours_table_bs256", "sdpa_default", "sdpa_flash", "ratio_default", "ratio_flash",
            "table_ratio_default", "ours_packed_eager", "sdpa_default_eager"]
    print_table(rows, cols)
    write_json(args.json, "prefill_attention", rows,
               {"unit": "TFLOP/s", "timing": "CUDA graph replay (GPU time); _eager: do_bench",
                "configs": {str(k): v for k, v in PREFILL_CONFIGS.items()},
                "packed_configs": {str(k): v for k, v in PACKED_CONFIGS.items()},
                "sweep": sweep_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
