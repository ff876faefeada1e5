"""Do the fused Triton ops pay? Each against its eager torch reference, at decode and prefill sizes.

Ops: KV write (vs index_copy), residual add + RMSNorm, SwiGLU activation, RoPE on q and k, and
RoPE fused with the KV write (vs our two separate Triton kernels, the launch it saves).
Shapes are Llama-3-8B's (hidden 4096, FFN 14336, 32/8 heads of 128) and SmolLM2-135M's (576,
1536, 9/3 heads of 64), at T = 1, 64 and 4096 tokens, bf16. The verdict per op feeds the
docstrings of kernels/{kv_write,rmsnorm,swiglu,rope}.py. Times are CUDA-graph replays (GPU time,
no launch overhead: decode steps run as graphs).

    python benchmarks/fused_ops.py [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import median_ms, median_ms_graph, print_table, write_json  # noqa: E402
from llm_playground.kernels import reference as ref  # noqa: E402
from llm_playground.kernels.kv_write import write_kv  # noqa: E402
from llm_playground.kernels.rmsnorm import rms_norm  # noqa: E402
from llm_playground.kernels.rope_triton import rope, rope_write_kv  # noqa: E402
from llm_playground.kernels.swiglu import silu_and_mul  # noqa: E402

MODELS = {"8B": (4096, 14336, 32, 8, 128), "135M": (576, 1536, 9, 3, 64)}


def cases(T, hidden, inter, hq, hkv, d):
    dev, dt = "cuda", torch.bfloat16
    x = torch.randn(T, hidden, device=dev, dtype=dt)
    r = torch.randn(T, hidden, device=dev, dtype=dt)
    w = torch.randn(hidden, device=dev, dtype=dt)
    gu = torch.randn(T, 2 * inter, device=dev, dtype=dt)
    q = torch.randn(T, hq, d, device=dev, dtype=dt)
    k = torch.randn(T, hkv, d, device=dev, dtype=dt)
    pos = torch.randint(0, 4096, (T,), device=dev)
    cos = torch.randn(4096, d // 2, device=dev)
    sin = torch.randn(4096, d // 2, device=dev)
    kc = torch.randn(4096, 16, hkv, d, device=dev, dtype=dt)
    vc = torch.randn_like(kc)
    slots = torch.randperm(4096 * 16, device=dev)[:T]
    return {
        "kv_write": (lambda: write_kv(k, k, kc, vc, slots), lambda: ref.write_kv_ref(k, k, kc, vc, slots)),
        "rmsnorm_residual": (lambda: rms_norm(x, w, 1e-5, r), lambda: ref.rms_norm_ref(x, w, 1e-5, r)),
        "silu_and_mul": (lambda: silu_and_mul(gu), lambda: ref.silu_and_mul_ref(gu)),
        "rope": (lambda: rope(q, k, pos, cos, sin), lambda: ref.rope_ref(q, k, pos, cos, sin)),
        # baseline: our two separate Triton kernels (rope, then kv_write), what the fusion replaces
        "rope_write_kv": (lambda: rope_write_kv(q, k, k, pos, cos, sin, kc, vc, slots),
                          lambda: write_kv(rope(q, k, pos, cos, sin)[1], k, kc, vc, slots)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("fused_ops: needs a CUDA GPU", file=sys.stderr)
        return 2
    rows = []
    for model, shape in MODELS.items():
        for T in (1, 64, 4096):
            for op, (triton_fn, torch_fn) in cases(T, *shape).items():
                t_ms = median_ms_graph(triton_fn)
                if op == "kv_write":  # the reference syncs (boolean indexing): not capturable
                    r_ms, how = median_ms(torch_fn), "eager (not capturable)"
                elif op == "rope_write_kv":
                    r_ms, how = median_ms_graph(torch_fn), "graph: triton rope + triton kv_write"
                else:
                    r_ms, how = median_ms_graph(torch_fn), "graph"
                rows.append({"model": model, "T": T, "op": op, "triton_us": t_ms * 1e3,
                             "torch_us": r_ms * 1e3, "speedup": r_ms / t_ms, "torch_timing": how})
    print_table(rows, ["model", "T", "op", "triton_us", "torch_us", "speedup", "torch_timing"])
    write_json(args.json, "fused_ops", rows, {"unit": "microseconds, median (CUDA events)"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
