"""Host launch time vs GPU time of one eager forward, and each kernel entry point's launch cost.

(Until the overlap issue this was benchmarks/step_anatomy.py; that name now times whole engine
steps. Its earlier results are benchmarks/results/forward_launch_costs-h100.json.)

For SmolLM2-135M shapes (random bf16 weights) and three batches -- 256 decodes (context ~600),
one 2,048-token prefill chunk alone, and both mixed (the shape of the throughput benchmark's
prefill steps) -- it times the eager forward two ways: `enqueue_ms`, the host time until the
last kernel is launched (no sync), and `total_ms`, until the GPU has finished (sync). When
enqueue is close to total, the step is bound by Python and kernel launches, not the GPU. It also
times each kernel entry point's host launch cost alone (100 calls, no sync) at the mixed shape.

    python benchmarks/forward_launch_costs.py [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import print_table, write_json  # noqa: E402

DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def batch_for(q_lens, ctx_lens, kv, num_decodes, device):
    """AttentionBatch over freshly laid-out blocks: sequence i owns consecutive blocks."""
    from llm_playground.model.network.batch import AttentionBatch
    bs = kv.block_size
    tables, slots, pos, start = [], [], [], 0
    for q, n in zip(q_lens, ctx_lens):
        nb = -(-n // bs)
        t = list(range(start, start + nb))
        start += nb
        tables.append(t)
        slots += [t[p // bs] * bs + p % bs for p in range(n - q, n)]
        pos += list(range(n - q, n))
    width = max(len(t) for t in tables)
    i32 = lambda x: torch.tensor(x, dtype=torch.int32, device=device)  # noqa: E731
    cu = [0]
    for q in q_lens:
        cu.append(cu[-1] + q)
    return AttentionBatch(
        positions=torch.tensor(pos, device=device), slot_mapping=torch.tensor(slots, device=device),
        cu_seqlens_q=i32(cu), context_lens=i32(ctx_lens),
        block_tables=i32([t + [-1] * (width - len(t)) for t in tables]),
        max_q_len=max(q_lens), max_context_len=max(ctx_lens), num_decodes=num_decodes,
        logits_indices=torch.tensor([c - 1 for c in cu[1:]], device=device),
        has_holes=False, has_prefix=False)


def time_forward(model, kv, batch, ids, reps=10):
    enq, tot = [], []
    for _ in range(reps + 2):
        sync()
        t0 = time.perf_counter()
        h = model(ids, batch, kv)
        model.compute_logits(h[batch.logits_indices])
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
        enq.append((t1 - t0) * 1e3)
        tot.append((t2 - t0) * 1e3)
    med = lambda xs: sorted(xs[2:])[len(xs[2:]) // 2]  # noqa: E731
    return med(enq), med(tot)


def launch_costs(model, kv, batch, T):
    """Host microseconds per call of each entry point, 100 calls without a sync."""
    from llm_playground.kernels import dispatch
    layer = model.layers[0]
    cfg = model.config
    x = torch.randn(T, cfg.hidden_size, dtype=model.dtype, device=DEVICE)
    qkv = layer.qkv_proj(x)
    q, k, v = layer.project_qkv(x)
    q2, k2 = dispatch.rope_write_kv(q, k, v, batch.positions, model.rope_cos, model.rope_sin,
                                    kv.k[0], kv.v[0], batch.slot_mapping, return_k=True)
    gate_up = layer.gate_up_proj(x)
    ops = {
        "rms_norm(+residual)": lambda: dispatch.rms_norm(x, layer.input_norm, 1e-5, x),
        "qkv GEMM (torch)": lambda: layer.qkv_proj(x),
        "rope_write_kv": lambda: dispatch.rope_write_kv(q, k, v, batch.positions, model.rope_cos,
                                                        model.rope_sin, kv.k[0], kv.v[0],
                                                        batch.slot_mapping, return_k=True),
        "paged_attention (decode + packed prefill)": lambda: dispatch.paged_attention(
            q2, kv.k[0], kv.v[0], batch.cu_seqlens_q, batch.context_lens, batch.block_tables,
            batch.max_q_len, batch.max_context_len, layer.scale, batch.mask, batch.num_decodes,
            holes=False, k_new=k2, v_new=v, prefix=True),
        "silu_and_mul": lambda: dispatch.silu_and_mul(gate_up),
    }
    del qkv
    rows = []
    for name, fn in ops.items():
        for _ in range(3):
            fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(100):
            fn()
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
        rows.append({"op": name, "host_us_per_call": (t1 - t0) * 1e4,
                     "total_us_per_call": (t2 - t0) * 1e4})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of the script itself")
    a = ap.parse_args(argv)
    global DEVICE
    DEVICE = a.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("forward_launch_costs: needs a CUDA GPU", file=sys.stderr)
        return 2
    from benchmarks.e2e_decode import MODELS
    from llm_playground.model.network.kv_cache import KVCache
    from llm_playground.model.network.llama import LlamaForCausalLM
    from llm_playground.model.network.weight_contract import expected_shapes
    cfg = MODELS["smollm2"]
    torch.manual_seed(0)
    if DEVICE != "cuda":   # smoke: 2 layers
        import dataclasses
        cfg = dataclasses.replace(cfg, num_layers=2)
    model = LlamaForCausalLM(cfg, torch.bfloat16, DEVICE)
    shapes = expected_shapes(cfg)
    model.load_weights(lambda n: torch.randn(shapes[n]) * 0.02)
    model.eval()
    kv = KVCache(cfg.num_layers, 20000, 16, cfg.num_kv_heads, cfg.head_dim, torch.bfloat16, DEVICE)
    cases = {
        "256 decodes (ctx 600)": ([1] * 256, [600] * 256, 256),
        "1 prefill chunk of 2048": ([2048], [2048], 0),
        "mixed: 256 decodes + 2048 prefill": ([1] * 256 + [2048], [600] * 256 + [2048], 256),
    }
    rows = []
    for name, (ql, cl, nd) in cases.items():
        batch = batch_for(ql, cl, kv, nd, DEVICE)
        ids = torch.randint(0, cfg.vocab_size, (sum(ql),), device=DEVICE)
        enq, tot = time_forward(model, kv, batch, ids)
        rows.append({"batch": name, "tokens": sum(ql), "enqueue_ms": enq, "total_ms": tot})
    print_table(rows, ["batch", "tokens", "enqueue_ms", "total_ms"])
    mixed = cases["mixed: 256 decodes + 2048 prefill"]
    batch = batch_for(mixed[0], mixed[1], kv, mixed[2], DEVICE)
    ops = launch_costs(model, kv, batch, sum(mixed[0]))
    print_table(ops, ["op", "host_us_per_call", "total_us_per_call"])
    write_json(a.json, "forward_launch_costs", rows, {"ops": ops})
    return 0


if __name__ == "__main__":
    sys.exit(main())
