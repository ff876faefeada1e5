"""Tensor parallelism: tokens/s of TP=N against one rank, and the collectives' share of a step.

Random weights (model/parallel/random_model.py) of a named shape, the same in every rank; a
decode workload of B requests (prompt --prompt tokens, --new tokens each, greedy, no EOS) run
through the engine once per rank count, in one run. Per rank count it reports decode tokens/s
(decode-only steps), ms per decode step, the share of rank 0's step time spent in the step's
collectives (the row-parallel all-reduces and the logits' all_gather, ParallelReport.comm_s),
and the plan broadcast. TP=1 is the plain Engine (no process group).

CPU mode (default without CUDA; gloo): on a 2-core machine two ranks get one core each and
one rank gets both, so this measures the overhead of splitting (collectives, plan pickling,
smaller matmuls), not a speed-up; say so when quoting it.
GPU mode (--device cuda; NCCL; needs N GPUs): Llama-3-8B shapes in bf16, TP=1 vs TP=2, batch 1
and 64, plus the fraction of the per-GPU bandwidth floor: per decode step each rank must read
its weight shard (and its KV share), so floor = bytes per rank / the GPU's copy bandwidth,
measured in the same run (a device-to-device copy of 1 GiB); fraction = floor / measured step.
The GPU mode is written for a multi-GPU machine and was not run here (none was lent).

  python benchmarks/tensor_parallel.py                                   # CPU, 2 ranks
  python benchmarks/tensor_parallel.py --device cuda --model llama8b --ranks 1 2 --batch 1 64
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402

SHAPES = {
    # about 60 MB float32: big enough that a matmul dominates a CPU step, quick to load
    "cpu-small": dict(vocab_size=8192, hidden_size=512, intermediate_size=1536, num_layers=8,
                      num_heads=8, num_kv_heads=4, head_dim=64, max_position=4096),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
                 num_heads=4, num_kv_heads=2, head_dim=16, max_position=1024),
    "smollm2": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                    num_heads=9, num_kv_heads=3, head_dim=64, max_position=8192,
                    rope_theta=100000.0, tie_word_embeddings=True),
    "llama8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
                    num_heads=32, num_kv_heads=8, head_dim=128, max_position=8192,
                    rope_theta=500000.0),
}


def copy_bandwidth(device: str) -> float | None:
    """Bytes/s of a 1 GiB device-to-device copy (read + write counted), CUDA only."""
    if not device.startswith("cuda"):
        return None
    x = torch.empty(2**30, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    return 2 * x.numel() * 10 / (time.perf_counter() - t0)


def weight_bytes_per_rank(shape: dict, world: int, elem: int) -> int:
    """Bytes of weights one rank reads per decode step (projections / world, head / world,
    norms; the embedding is a gather of B rows and is not counted)."""
    H, I, L, D = shape["hidden_size"], shape["intermediate_size"], shape["num_layers"], shape["head_dim"]
    q, kv = shape["num_heads"] * D, shape["num_kv_heads"] * D
    per_layer = (H * (q + 2 * kv) + q * H + 3 * H * I) / world
    return int(elem * (L * per_layer + shape["vocab_size"] * H / world))


def run_one(shape_name: str, world: int, batch: int, prompt: int, new: int, device: str,
            dtype: str, blocks: int, threads: int | None = None) -> dict:
    """One rank count and batch: decode tok/s, ms/step, collectives' share."""
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.engine.sampling_params import SamplingParams
    from llm_playground.model.parallel.random_model import ModelSource
    from llm_playground.model.parallel.tp_engine import start_tensor_parallel
    shape = SHAPES[shape_name]
    source = ModelSource(random=shape, dtype=dtype, seed=0, scale=0.02)
    cfg = EngineConfig(num_blocks=blocks, block_size=16, device=device,
                       max_num_seqs=max(batch, 1), max_num_batched_tokens=max(2048, batch * prompt),
                       report_blocks=False, cuda_graphs=False)
    saved_threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // world))
    used_threads = torch.get_num_threads()
    if world == 1:
        loaded, _ = source.load(device)
        engine = Engine(loaded, cfg)
    else:
        engine = start_tensor_parallel(source, world, cfg)
    g = torch.Generator().manual_seed(1)
    params = SamplingParams(max_tokens=new, temperature=0.0)
    try:
        for _ in range(batch):
            engine.add_request(torch.randint(0, 256, (prompt,), generator=g).tolist(), params)
        steps = []
        while engine.has_unfinished():
            r = engine.step()
            if r.num_prefill_tokens == 0 and r.num_decode_tokens > 0:
                steps.append(r)
    finally:
        torch.set_num_threads(saved_threads)
        if world > 1:
            engine.close()
    steps = steps[2:] or steps                         # the first decodes warm up
    t = sum(r.step_time_s for r in steps)
    toks = sum(r.num_decode_tokens for r in steps)
    comm = sum(r.parallel.comm_s for r in steps if r.parallel) if world > 1 else 0.0
    bcast = sum(r.parallel.broadcast_s for r in steps if r.parallel) if world > 1 else 0.0
    elem = 2 if dtype in ("bfloat16", "float16") else 4
    return dict(model=shape_name, tp=world, batch=batch, decode_steps=len(steps),
                tok_s=toks / t if t else 0.0, ms_per_step=1e3 * t / max(1, len(steps)),
                comm_share=comm / t if t else 0.0, broadcast_share=bcast / t if t else 0.0,
                weight_bytes_per_rank=weight_bytes_per_rank(shape, world, elem),
                threads_per_rank=used_threads if device == "cpu" else None)


def main(argv: list[str] | None = None) -> int:
    """Run every (rank count, batch), print the table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default=None, choices=list(SHAPES),
                    help="shape (default: cpu-small on the CPU, llama8b on CUDA)")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=None,
                    help="requests decoding at once (default: 1 4 on CPU, 1 64 on CUDA)")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=None, help="tokens per request (16 CPU, 64 CUDA)")
    ap.add_argument("--dtype", default=None, help="float32 on the CPU, bfloat16 on CUDA")
    ap.add_argument("--json", default=str(RESULTS_DIR), help="file or folder for the JSON")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    model = args.model or ("llama8b" if cuda else "cpu-small")
    batches = args.batch or ([1, 64] if cuda else [1, 4])
    new = args.new or (64 if cuda else 16)
    dtype = args.dtype or ("bfloat16" if cuda else "float32")
    if cuda and torch.cuda.device_count() < max(args.ranks):
        print(f"needs {max(args.ranks)} GPUs, this machine has {torch.cuda.device_count()}")
        return 2
    bw = copy_bandwidth("cuda:0") if cuda else None
    rows = []
    for batch in batches:
        blocks = max(64, batch * (-(-(args.prompt + new) // 16) + 1))
        # CPU: TP=1 with all cores and with one (what each rank of TP=2 on 2 cores gets)
        runs = [(w, None) for w in args.ranks]
        if not cuda and 1 in args.ranks and (os.cpu_count() or 1) > 1:
            runs.insert(args.ranks.index(1) + 1, (1, 1))
        for world, threads in runs:
            row = run_one(model, world, batch, args.prompt, new, args.device, dtype, blocks,
                          threads)
            if bw:
                floor = row["weight_bytes_per_rank"] / bw
                row["bandwidth_floor_fraction"] = floor / (row["ms_per_step"] / 1e3)
            rows.append(row)
    base = {}     # per batch: TP=1 on one thread where there is such a row (what a rank gets)
    for r in sorted((r for r in rows if r["tp"] == 1), key=lambda r: r["threads_per_rank"] != 1):
        base.setdefault(r["batch"], r["tok_s"])
    for r in rows:
        r["vs_tp1"] = r["tok_s"] / base[r["batch"]] if r["batch"] in base and base[r["batch"]] else None
    cols = ["model", "tp", "threads_per_rank", "batch", "tok_s", "vs_tp1", "ms_per_step", "comm_share",
            "broadcast_share"] + (["bandwidth_floor_fraction"] if bw else [])
    print_table(rows, cols)
    if not cuda:
        print("CPU: the ranks share the machine's cores (one each at TP=2 on 2 cores), so vs_tp1 "
              "(against TP=1 on one thread) is the cost of splitting, not a speed-up; comm_share "
              "includes waiting for the slower rank to reach each collective.")
    out = write_json(args.json, "tensor_parallel", rows,
                     {"copy_bandwidth_Bps": bw, "new": new, "prompt": args.prompt, "dtype": dtype})
    if out:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
