"""Decode speed with quantised weights: bf16 vs int8 vs int4 projections, same run, same weights.

GPU form (default when CUDA is present): random weights of SmolLM2-135M and Llama-3-8B shapes
(benchmarks/e2e_decode.py's MODELS; every matrix N(0, 0.02) from one seeded generator, norms 1),
built once per weight format so all three hold the same values before quantising:
    bf16   plain bfloat16 projections (cuBLAS, the fused norm/SwiGLU kernels at small batch)
    int8   per-channel int8 (kernels/quant_matmul.py), bf16 activations
    int4   int4 group 128 with min/scale (Q4_1 style), bf16 activations; the head int8
The embedding table stays bf16 in every format; the output head is quantised with the rest
(int8 in the int4 format, as `--weights int4` does).
One decode step of B sequences (B = --batches, default 1 16 64), each with --context tokens
(default 256) already in a paged cache of scattered blocks: forward + output head + argmax,
captured in a CUDA graph and timed by triton's do_bench_cudagraph (median); tok/s = B / step
time. Also: prefill tok/s of one --prefill-token chunk at B = 1 (eager, do_bench), and each
format's weight bytes. Ratios (x_bf16) are against bf16 in the same run and the same batch.
KV rows: bf16 weights, the largest batch at --kv-context (default 1024) tokens each, float vs
int8 KV cache: tok/s, the KV bytes read per step and per second, and blocks per GiB of pool.
Targets (issue 19 + WAVE2 notes, Llama-3-8B shapes, batch 1): int4 >= 1.8x, int8 >= 1.4x bf16.

CPU form (--device cpu, benchmarks/quant_decode_cpu.py): the default model (or --model PATH),
2 threads (--threads), batch 1, --new-tokens greedy tokens through the real Engine for the CPU
default and --weights int8, native, int4 and float32; transformers float32 on the same GGUF
(--no-transformers skips it); then llama.cpp on the same GGUF in a subprocess of the Python that
--llama-cpp-python / $LLAMA_CPP_PYTHON names (llama-cpp-python or llama-cpp-py-sync), else that
row says why it is missing. Each row has the load average; the CPU is shared with other jobs:
compare ratios from one run, not figures across runs.

    python benchmarks/quant_decode.py [--json PATH] [--models smollm2 llama8b] [--batches 1 16 64]
    python benchmarks/quant_decode.py --device cpu [--threads 2] [--new-tokens 64]
A failure of one (model, format) is a row with its error; the others still run.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402

FORMATS = ("bf16", "int8", "int4")
INT4_GROUP = 128


def random_model(cfg, fmt: str, device: str, seed: int = 0):
    """Our LlamaForCausalLM of `cfg` with seeded N(0, 0.02) weights, projections in `fmt`."""
    from llm_playground.kernels.quant_layout import quantize_int4, quantize_int8
    from llm_playground.model.network.llama import LlamaForCausalLM
    model = LlamaForCausalLM(cfg, torch.bfloat16, device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    if fmt == "int8":
        model.quantize_projections(lambda parts, w: quantize_int8(w, None))
    elif fmt == "int4":                       # the head at int8, as --weights int4 does
        from llm_playground.model.weights.loader import HEAD_PARTS
        model.quantize_projections(lambda parts, w: quantize_int8(w, None) if parts[0] in HEAD_PARTS
                                   else quantize_int4(w, INT4_GROUP))
    return model.eval()


def weight_bytes(model) -> int:
    """Bytes of every parameter and packed weight, the tied table once."""
    from llm_playground.model.network.quant_linear import QuantLinear
    seen, total = set(), 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            total += m.nbytes
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def decode_batch(cfg, B: int, context: int, block_size: int, device: str, kv_dtype=None):
    """(KVCache, AttentionBatch of B decodes at `context`, input ids (B,)): blocks scattered."""
    from llm_playground.model.network.batch import AttentionBatch
    from llm_playground.model.network.kv_cache import KVCache
    per_seq = -(-context // block_size)
    n_blocks = B * per_seq + 1
    kv = KVCache(cfg.num_layers, n_blocks, block_size, cfg.num_kv_heads, cfg.head_dim,
                 torch.bfloat16, device, kv_dtype=kv_dtype)
    g = torch.Generator().manual_seed(1)
    table = torch.randperm(n_blocks, generator=g)[:B * per_seq].view(B, per_seq).to(torch.int32)
    pos = context - 1
    slots = table[:, pos // block_size].long() * block_size + pos % block_size       # (B,)
    batch = AttentionBatch(
        positions=torch.full((B,), pos, dtype=torch.long), slot_mapping=slots,
        cu_seqlens_q=torch.arange(B + 1, dtype=torch.int32),
        context_lens=torch.full((B,), context, dtype=torch.int32), block_tables=table,
        max_q_len=1, max_context_len=context, num_decodes=B, has_holes=False, has_prefix=True)
    ids = torch.randint(0, cfg.vocab_size, (B,), generator=g)
    return kv, batch.to(device), ids.to(device)


def prefill_batch(cfg, T: int, block_size: int, device: str):
    from llm_playground.model.network.batch import AttentionBatch
    from llm_playground.model.network.kv_cache import KVCache
    n = -(-T // block_size)
    kv = KVCache(cfg.num_layers, n, block_size, cfg.num_kv_heads, cfg.head_dim, torch.bfloat16,
                 device)
    batch = AttentionBatch(
        positions=torch.arange(T), slot_mapping=torch.arange(T),
        cu_seqlens_q=torch.tensor([0, T], dtype=torch.int32),
        context_lens=torch.tensor([T], dtype=torch.int32),
        block_tables=torch.arange(n, dtype=torch.int32)[None], max_q_len=T, max_context_len=T,
        num_decodes=0, has_holes=False, has_prefix=False)
    ids = torch.randint(0, cfg.vocab_size, (T,), generator=torch.Generator().manual_seed(2))
    return kv, batch.to(device), ids.to(device)


def run_gpu(a) -> list[dict]:
    from benchmarks.bench_common import median_ms, median_ms_graph
    from benchmarks.e2e_decode import MODELS
    rows = []
    for name in a.models:
        cfg = dataclasses.replace(MODELS[name], eos_token_ids=())
        base: dict[int, float] = {}
        for fmt in FORMATS:
            model = None
            try:
                t0 = time.perf_counter()
                model = random_model(cfg, fmt, a.device)
                model.ensure_positions(max(a.context, a.prefill_tokens) + 1)
                wbytes = weight_bytes(model)
                build_s = time.perf_counter() - t0
                prefill_tok_s = None
                for B in a.batches:
                    kv, batch, ids = decode_batch(cfg, B, a.context, 16, a.device)

                    def step():
                        return model.compute_logits(model(ids, batch, kv)).argmax(-1)
                    step()
                    step()                            # compile every kernel before the capture
                    torch.cuda.synchronize()
                    ms = median_ms_graph(step, rep_ms=a.rep_ms)
                    tok_s = B / (ms / 1e3)
                    if fmt == "bf16":
                        base[B] = tok_s
                    row = {"model": name, "weights": fmt, "batch": B, "step_ms": ms,
                           "tok_s": tok_s, "x_bf16": tok_s / base[B] if B in base else None,
                           "weight_gb": wbytes / 1e9,
                           "weight_gb_s": wbytes / (ms / 1e3) / 1e9, "build_s": build_s}
                    if B == a.batches[0] and a.prefill_tokens:
                        pkv, pbatch, pids = prefill_batch(cfg, a.prefill_tokens, 16, a.device)
                        pms = median_ms(lambda: model(pids, pbatch, pkv), rep_ms=a.rep_ms)
                        prefill_tok_s = a.prefill_tokens / (pms / 1e3)
                        row["prefill_tok_s"] = prefill_tok_s
                    rows.append(row)
                    print(f"{name} {fmt} batch {B}: {tok_s:.0f} tok/s ({ms:.3f} ms/step)", flush=True)
                    del kv, batch, ids
                if fmt == "bf16" and a.kv_context:
                    rows += kv_rows(a, name, cfg, model)
            except Exception as e:                     # one failure is a row, not the end
                traceback.print_exc()
                rows.append({"model": name, "weights": fmt, "error": f"{type(e).__name__}: {e}"[:200]})
            del model
            gc.collect()
            torch.cuda.empty_cache()
    return rows


def kv_rows(a, name, cfg, model) -> list[dict]:
    """bf16 weights, the largest batch at --kv-context tokens each: float vs int8 KV cache, with
    the KV bytes the step must read (B x context x bytes per token) per second of step."""
    from benchmarks.bench_common import median_ms_graph
    rows, base = [], None
    B = max(a.batches)
    for kv_dtype in ("auto", "int8"):
        kv, batch, ids = decode_batch(cfg, B, a.kv_context, 16, a.device, kv_dtype)

        def step():
            return model.compute_logits(model(ids, batch, kv)).argmax(-1)
        step()
        step()
        torch.cuda.synchronize()
        ms = median_ms_graph(step, rep_ms=a.rep_ms)
        kv_bytes = B * a.kv_context * kv.bytes_per_block // kv.block_size
        tok_s = B / (ms / 1e3)
        base = base or tok_s
        rows.append({"model": name, "weights": "bf16", "kv": kv_dtype, "batch": B,
                     "context": a.kv_context, "step_ms": ms, "tok_s": tok_s,
                     "x_float_kv": tok_s / base, "kv_gb_read": kv_bytes / 1e9,
                     "kv_gb_s": kv_bytes / (ms / 1e3) / 1e9,
                     "blocks_per_gib": (1 << 30) // kv.bytes_per_block})
        print(f"{name} bf16 + {kv_dtype} KV batch {B} ctx {a.kv_context}: {tok_s:.0f} tok/s", flush=True)
        del kv, batch, ids
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", nargs="+", default=["smollm2", "llama8b"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    ap.add_argument("--context", type=int, default=256, help="tokens already cached per sequence")
    ap.add_argument("--prefill-tokens", type=int, default=512, help="0 = no prefill timing")
    ap.add_argument("--kv-context", type=int, default=1024,
                    help="context of the float-vs-int8 KV rows (largest batch); 0 = skip them")
    ap.add_argument("--rep-ms", type=int, default=200, help="timing window per measurement")
    ap.add_argument("--model", default=None, help="CPU form: a GGUF path (default: the default model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3,
                    help="CPU form: rounds over all systems; each row keeps its best")
    ap.add_argument("--no-transformers", dest="transformers", action="store_false",
                    help="CPU form: skip the transformers float32 row")
    ap.add_argument("--llama-cpp-python", default=None, help="CPU form: a Python that imports "
                    "llama_cpp or llama_cpp_py_sync (e.g. a separate venv's); default $LLAMA_CPP_PYTHON, else this one")
    ap.add_argument("--json", default=str(RESULTS_DIR),
                    help="a file, or a folder for quant_decode-<device>.json (default benchmarks/results/)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    if a.device.startswith("cuda"):
        rows = run_gpu(a)
        print_table([r for r in rows if "kv" not in r],
                    ["model", "weights", "batch", "tok_s", "x_bf16", "step_ms", "weight_gb",
                     "weight_gb_s", "prefill_tok_s", "error"])
        print_table([r for r in rows if "kv" in r],
                    ["model", "kv", "batch", "context", "tok_s", "x_float_kv", "kv_gb_read",
                     "kv_gb_s", "blocks_per_gib"])
        extra = {"context": a.context, "int4_group": INT4_GROUP}
    else:
        from benchmarks.quant_decode_cpu import load_1min, run_cpu
        load_start = load_1min()
        rows = run_cpu(a)
        print_table(rows, ["system", "version", "dtype", "decode_tok_s", "x_llama_cpp", "x_transformers",
                           "agree_float32", "load", "error"])
        extra = {"threads": a.threads, "new_tokens": a.new_tokens, "batch": 1, "rounds": a.rounds,
                 "load_start": load_start, "load_end": load_1min(),
                 "note": "shared CPU: ratios within one run only"}
    extra["wall_s"] = time.perf_counter() - t0
    out = write_json(a.json, "quant_decode", rows, extra)
    if out:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
