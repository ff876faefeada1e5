"""Speculative decoding: prompt lookup vs off on the CPU, and one verify step's cost on a GPU.

CPU mode (default): the default model (or --model PATH / tiny), batch 1, greedy, in float32 and
in the default CPU dtype (int8 weights). Each prompt of benchmarks/speculation_prompts.py runs
with `--speculate off` and `ngram:K` (and, with --layers L, `draft:layers=L:K`), in
alternation, --repeats times; the best decode rate of each counts (the machine is shared, so
its figures are noisy: compare the ratios of one run). Reported: decode tok/s (tokens after the
first / the time of the steps after the prefill), the ratio on / off, whether the tokens are
identical, the acceptance rate (accepted / proposed), tokens per decode step, and the share of
decode steps that verified a proposal, and `est_ratio`: the speedup those imply with the
verify / decode forward cost measured in the same run (interleaved, median: steadier than two
tok/s figures on a shared machine). Targets: >= 1.5x on the copying prompts at identical
output, >= 0.95x on the others.

GPU mode (--gpu): random weights of SmolLM2-135M and Llama-3-8B shapes (bf16), B sequences of
--context tokens; the time of one decode step (1 new token each) and of one verify step (K + 1
tokens each, K = 2, 4, 8), the network's forward plus the logits of every new token, both eager
and both replayed from a CUDA graph, at batch 1 and 16; ratio verify / decode (target <= 1.3 at
K = 4). With the CPU JSON (--cpu-json) it prints the speedup the CPU's acceptance rates imply:
tokens per step / (share of verify steps x cost ratio + the rest).

  python benchmarks/speculation.py --json benchmarks/results/            # CPU, ~10 minutes
  python benchmarks/speculation.py --model tiny --new-tokens 8           # seconds, to validate
  python benchmarks/speculation.py --gpu --json benchmarks/results/      # on an H100
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import (RESULTS_DIR, median_ms, median_ms_graph,  # noqa: E402
                                     print_table, write_json)
from benchmarks.engine_models import load  # noqa: E402
from benchmarks.speculation_prompts import COPYING, OTHER, prompt_ids  # noqa: E402


def run_once(loaded, ids: list[int], spec: str, new: int) -> dict:
    """One request alone through a fresh engine with speculation `spec`."""
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.engine.sampling_params import SamplingParams
    e = Engine(loaded, EngineConfig(num_blocks=-(-(len(ids) + new + 32) // 16) + 8,
                                    max_num_batched_tokens=4096, enable_prefix_caching=False,
                                    speculate=spec))
    e.generate(ids[:4], SamplingParams(max_tokens=3, ignore_eos=True))            # warm-up
    e.add_request(ids, SamplingParams(max_tokens=new))
    out: list[int] = []
    dec_s, steps, rows, proposed, accepted = 0.0, 0, 0, 0, 0
    while e.has_unfinished():
        r = e.step()
        if not r.num_prefill_tokens:
            dec_s, steps = dec_s + r.step_time_s, steps + 1
        rows, proposed, accepted = (rows + r.spec_rows, proposed + r.spec_proposed,
                                    accepted + r.spec_accepted)
        out += [t for o in r.outputs for t in o.new_token_ids]
    dec = max(len(out) - 1, 0)
    return {"ids": out, "decode_tok_s": dec / dec_s if dec_s else 0.0, "steps": steps,
            "verify_rows": rows, "proposed": proposed, "accepted": accepted}


def cpu_cost_ratio(loaded, k: int, ctx: int, reps: int = 15) -> tuple[float, float]:
    """(decode ms, verify ms) of the network's forward + logits on the CPU: 1 vs k + 1 new
    tokens after ctx - 1 cached ones, interleaved, the median of `reps` each (a noisy machine
    slows both alike, so their ratio holds better than two tok/s figures do)."""
    import statistics
    import time
    from llm_playground.model.network.kv_cache import KVCache
    cfg, model = loaded.config, loaded.model
    kv = KVCache(cfg.num_layers, -(-ctx // 16) + 1, 16, cfg.num_kv_heads, cfg.head_dim,
                 loaded.dtype, "cpu")
    runs: dict[int, list[float]] = {1: [], k + 1: []}
    batches = {q: make_batch(1, ctx, q, 16, "cpu") for q in runs}
    for _ in range(reps + 2):
        for q, b in batches.items():
            ids = torch.randint(0, cfg.vocab_size, (q,))
            t = time.perf_counter()
            with torch.inference_mode():
                model.compute_logits(model(ids, b, kv))
            runs[q].append(time.perf_counter() - t)
    d, v = (statistics.median(runs[q][2:]) * 1e3 for q in (1, k + 1))
    return d, v


def cpu_rows(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    rows = []
    specs = [f"ngram:{args.k}"] + ([f"draft:layers={args.layers}:{args.k}"] if args.layers else [])
    for dtype in args.dtypes:
        loaded = load(None if args.model == "default" else args.model,
                      None if dtype == "default" else dtype)
        dec_ms, ver_ms = cpu_cost_ratio(loaded, args.k, 512)
        print(f"{dtype}: forward + logits at context 512: decode {dec_ms:.1f} ms, verify of "
              f"{args.k + 1} tokens {ver_ms:.1f} ms (x{ver_ms / dec_ms:.2f})")
        for kind, prompts in (("copying", COPYING), ("other", OTHER)):
            for name, text in prompts.items():
                ids = prompt_ids(loaded, text)
                best: dict[str, dict] = {}
                for _ in range(args.repeats):
                    for spec in ["off"] + specs:
                        got = run_once(loaded, ids, spec, args.new_tokens)
                        if spec not in best or got["decode_tok_s"] > best[spec]["decode_tok_s"]:
                            best[spec] = got
                off = best["off"]
                for spec in specs:
                    on = best[spec]
                    dec_steps = max(on["steps"], 1)
                    rows.append({
                        "dtype": dtype, "kind": kind, "prompt": name, "spec": spec,
                        "prompt_tokens": len(ids), "new_tokens": len(on["ids"]),
                        "off_tok_s": off["decode_tok_s"], "on_tok_s": on["decode_tok_s"],
                        "ratio": on["decode_tok_s"] / off["decode_tok_s"] if off["decode_tok_s"] else 0.0,
                        "identical": on["ids"] == off["ids"],
                        "acceptance": on["accepted"] / on["proposed"] if on["proposed"] else 0.0,
                        "tokens_per_step": (len(on["ids"]) - 1) / dec_steps,
                        "verify_share": on["verify_rows"] / dec_steps,
                        "proposed": on["proposed"], "accepted": on["accepted"],
                        "cpu_cost_ratio": ver_ms / dec_ms})
                    f, c = rows[-1]["verify_share"], rows[-1]["cpu_cost_ratio"]
                    rows[-1]["est_ratio"] = rows[-1]["tokens_per_step"] / (f * c + 1 - f)
                    print_table(rows[-1:], COLUMNS)
    return rows


COLUMNS = ["dtype", "kind", "prompt", "spec", "new_tokens", "off_tok_s", "on_tok_s", "ratio",
           "identical", "acceptance", "tokens_per_step", "verify_share", "est_ratio"]


# ---------------------------------------------------------------------------------- GPU
def random_model(cfg, dtype, device):
    from llm_playground.model.network.llama import LlamaForCausalLM
    from llm_playground.model.network.weight_contract import expected_shapes
    g = torch.Generator(device=device).manual_seed(0)
    shapes = expected_shapes(cfg)
    m = LlamaForCausalLM(cfg, dtype, device)
    m.load_weights(lambda n: torch.ones(shapes[n], device=device) if "norm" in n else
                   torch.randn(shapes[n], device=device, generator=g) * 0.02)
    return m.eval()


def make_batch(B: int, ctx: int, q: int, block_size: int, device):
    """B sequences of ctx tokens (the last q new this step), contiguous blocks."""
    from llm_playground.kernels.mask import DENSE
    from llm_playground.model.network.batch import AttentionBatch
    nb = -(-ctx // block_size)
    tables = torch.arange(B * nb, dtype=torch.int32, device=device).view(B, nb)
    pos = torch.arange(ctx - q, ctx, device=device).repeat(B)                     # (B*q,)
    seq = torch.arange(B, device=device).repeat_interleave(q)
    slots = tables[seq, pos // block_size].long() * block_size + pos % block_size
    return AttentionBatch(
        positions=pos, slot_mapping=slots,
        cu_seqlens_q=torch.arange(0, B * q + 1, q, dtype=torch.int32, device=device),
        context_lens=torch.full((B,), ctx, dtype=torch.int32, device=device),
        block_tables=tables, max_q_len=q, max_context_len=ctx, mask=DENSE,
        num_decodes=B if q == 1 else 0, has_holes=False, has_prefix=True,
        num_verify=0 if q == 1 else B, verify_q_len=0 if q == 1 else q)


def gpu_rows(args) -> list[dict]:
    from benchmarks.e2e_decode import MODELS
    from llm_playground.model.network.kv_cache import KVCache
    dev, rows = torch.device("cuda"), []
    for name in args.models:
        cfg = MODELS[name]
        model = random_model(cfg, torch.bfloat16, dev)
        bs = 16
        kv = KVCache(cfg.num_layers, max(args.batches) * -(-args.context // bs) + 1, bs,
                     cfg.num_kv_heads, cfg.head_dim, torch.bfloat16, dev)
        for B in args.batches:
            base = {}
            for q in [1] + [k + 1 for k in args.ks]:
                batch = make_batch(B, args.context, q, bs, dev)
                ids = torch.randint(0, cfg.vocab_size, (B * q,), device=dev)

                def step(batch=batch, ids=ids):
                    with torch.inference_mode():
                        return model.compute_logits(model(ids, batch, kv))        # (B*q, V)
                eager = median_ms(step)
                try:
                    graph = median_ms_graph(step)
                except Exception as error:                  # noqa: BLE001 (reported)
                    print(f"{name} B={B} q={q}: no CUDA graph ({error})")
                    graph = None
                if q == 1:
                    base = {"eager": eager, "graph": graph}
                    continue
                rows.append({"model": name, "batch": B, "k": q - 1, "context": args.context,
                             "decode_eager_ms": base["eager"], "verify_eager_ms": eager,
                             "ratio_eager": eager / base["eager"],
                             "decode_graph_ms": base["graph"], "verify_graph_ms": graph,
                             "ratio_graph": (graph / base["graph"]) if graph and base["graph"]
                             else None})
                print_table(rows[-1:], GPU_COLUMNS)
        del model, kv
        torch.cuda.empty_cache()
    return rows


GPU_COLUMNS = ["model", "batch", "k", "decode_eager_ms", "verify_eager_ms", "ratio_eager",
               "decode_graph_ms", "verify_graph_ms", "ratio_graph"]


def estimates(cpu: list[dict], gpu: list[dict], k: int) -> list[dict]:
    """Per CPU prompt (prompt lookup) and GPU model / batch at the CPU run's K: the speedup its
    acceptance implies, tokens per step / (verify share x cost ratio + 1 - verify share)."""
    out = []
    for g in gpu:
        if g["k"] != k:
            continue
        ratio = g["ratio_graph"] or g["ratio_eager"]
        for c in cpu:
            if not c["spec"].startswith("ngram"):
                continue
            f = c["verify_share"]
            out.append({"model": g["model"], "batch": g["batch"], "dtype": c["dtype"],
                        "prompt": c["prompt"], "cost_ratio": ratio,
                        "tokens_per_step": c["tokens_per_step"],
                        "speedup": c["tokens_per_step"] / (f * ratio + 1 - f)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="default | tiny | PATH (CPU mode)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "default"])
    ap.add_argument("--k", type=int, default=4, help="proposals per step (CPU mode)")
    ap.add_argument("--layers", type=int, default=0, help="also draft:layers=L:K (CPU mode)")
    ap.add_argument("--new-tokens", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: a shared machine makes 2 threads thrash)")
    ap.add_argument("--gpu", action="store_true", help="time verify vs decode steps on CUDA")
    ap.add_argument("--models", nargs="+", default=["smollm2", "llama8b"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--cpu-json", default=str(RESULTS_DIR / "speculation-cpu2core.json"),
                    help="the CPU run whose acceptance the GPU mode turns into an estimate")
    ap.add_argument("--json", help="write results (a file, or a folder for the standard name)")
    args = ap.parse_args(argv)
    if args.k < 1 or args.new_tokens < 2 or args.repeats < 1:
        ap.error("--k >= 1, --new-tokens >= 2 and --repeats >= 1")
    if not args.gpu:
        rows = cpu_rows(args)
        print()
        print_table(rows, COLUMNS)
        write_json(args.json, "speculation", rows, {"mode": "cpu", "k": args.k,
                                                     "threads": args.threads})
        return 0
    if not torch.cuda.is_available():
        ap.error("--gpu needs CUDA")
    rows = gpu_rows(args)
    extra = {"mode": "gpu"}
    cpu_file = Path(args.cpu_json)
    if cpu_file.exists():
        cpu = json.loads(cpu_file.read_text())
        est = estimates(cpu["rows"], rows, cpu.get("k", 4))
        print(f"\nspeedup estimate from {cpu_file.name} (K = {cpu.get('k', 4)})")
        print_table(est, ["model", "batch", "dtype", "prompt", "cost_ratio", "tokens_per_step",
                          "speedup"])
        extra["estimates"] = est
    print()
    print_table(rows, GPU_COLUMNS)
    write_json(args.json, "speculation_gpu", rows, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
