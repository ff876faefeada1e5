"""Throughput: output tokens/s of our continuous-batching engine vs transformers static batching.

Workload: R requests (default 256), prompt and output lengths each uniform in [--min-len,
--max-len] (default 100-1024; when --min-len exceeds --max-len it becomes --max-len // 4), random
prompt ids, EOS ignored, fixed seed. Both runtimes hold the same random weights (SmolLM2-135M
shapes, N(0, 0.02), bf16 on CUDA / float32 on CPU; ours is filled from the transformers model's
state dict, benchmarks/e2e_decode.py). `--model tiny` = the same shapes cut to 2 layers and a
1,000-token vocabulary, for validating on CPU.

Ours: every request is added at t0, then `Engine.step()` until idle (greedy, ignore_eos,
max_tokens = the request's output length); chunked prefill with a token budget per step of
--budgets (default 2048, then 8192: one run each, the first is the headline; 2048 is this
project's default, 8192 vLLM's default for offline throughput),
max_num_seqs = --max-num-seqs, a KV pool big enough for all requests at once (no preemption).
transformers: `generate(do_sample=False)` over batches of --hf-batch consecutive requests, prompts
padded on the left to the batch's longest prompt, min_new_tokens = max_new_tokens = the batch's
longest output length (a static batch runs until its longest member is done; EOS is disabled
with eos_token_id=None). Only each request's own output length counts as output tokens, so the
tokens generated past a request's length are static batching's waste. Each side gets one
warm-up run on two short requests first.

Memory-bandwidth floor (ours): every step must read all weights once and the K/V of every
scheduled sequence's context once, so
    floor_s = sum over steps of (weight_bytes + kv_tokens_step x kv_bytes_per_token) / bandwidth
with kv_tokens_step = sum of kv_tokens over the sequences alive after the step (those finishing
in the step are missed: the floor is slightly low), kv_bytes_per_token = 2 x layers x kv_heads x
head_dim x dtype bytes, weight_bytes counting the tied embedding once, and bandwidth = measured
device-to-device copy rate (2 x bytes / time of a 1 GiB clone on CUDA, 256 MiB on CPU).
fraction_of_floor = floor_s / measured_s (1.0 = memory-bound at copy speed; activations and
prefill compute are ignored, so prefill-heavy workloads sit further from 1).

  python benchmarks/throughput.py --model tiny --device cpu --requests 8 --max-len 64
  python benchmarks/throughput.py                     # GPU: 256 requests, SmolLM2 shapes, bf16
"""
from __future__ import annotations

import argparse
import os
import dataclasses
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402


def make_models(name: str, dtype: torch.dtype, device: str):
    """(transformers model, our LoadedModel) with the same random weights."""
    from benchmarks.e2e_decode import MODELS, hf_model, ours_from
    from llm_playground.model.weights.loader import LoadedModel
    cfg = MODELS["smollm2" if name == "tiny" else name]
    if name == "tiny":
        cfg = dataclasses.replace(cfg, num_layers=2, vocab_size=1000)
    cfg = dataclasses.replace(cfg, eos_token_ids=())
    torch.manual_seed(0)
    hf = hf_model(cfg, dtype, device)
    ours = ours_from(hf, cfg, dtype, device)
    loaded = LoadedModel(model=ours, config=cfg, tokenizer=None, chat_template=None,
                         name=f"{name}-random", path=Path(name), dtype=dtype,
                         device=torch.device(device), weight_format=str(dtype).removeprefix("torch."))
    return hf, loaded


def workload(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[tuple[list[int], int]]:
    """n (prompt ids, output length) pairs, both lengths uniform in [lo, hi]."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p, o = rng.randint(lo, hi), rng.randint(lo, hi)
        out.append(([rng.randrange(vocab) for _ in range(p)], o))
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_bandwidth(device: str) -> float:
    """Bytes/s of a device-to-device copy (read + write counted), median of 5."""
    n = (1 << 30) if device.startswith("cuda") else (256 << 20)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(6):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n / sorted(times[1:])[2]


def run_ours(loaded, reqs, a, budget: int) -> dict:
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.sampling_params import SamplingParams
    bs = 16
    blocks = sum(-(-(len(p) + o) // bs) for p, o in reqs) + 64
    overlap = {"auto": None, "on": True, "off": False}[a.overlap]
    e = Engine(loaded, EngineConfig(num_blocks=blocks, block_size=bs, max_num_seqs=a.max_num_seqs,
                                    max_num_batched_tokens=budget, cuda_graphs=a.cuda_graphs,
                                    report_blocks=False, overlap=overlap))   # totals only
    # Warm-up with the run's step shapes (the first 32 requests with their prompts, so decodes
    # run beside prefill chunks of every size, then a prompt longer than the budget so a chunk
    # follows a cached prefix): kernel variants compile and allocator pools grow before timing.
    long_prompt = [t for p, _ in reqs for t in p][:min(budget + 100, e.max_model_len - 8)]
    for p, o in reqs[:32]:
        e.add_request(p, SamplingParams(max_tokens=min(o, 32), ignore_eos=True))
    for _ in range(3):
        e.step()
    e.add_request(long_prompt, SamplingParams(max_tokens=4, ignore_eos=True))
    while e.has_unfinished():
        e.step()
    per_token = e.kv_bytes_per_block // bs
    sync(a.device)
    t0 = time.perf_counter()
    for p, o in reqs:
        e.add_request(p, SamplingParams(max_tokens=o, ignore_eos=True))
    produced, kv_tokens, steps, preempt = 0, 0, 0, 0
    decode_ms, mixed_ms = [], []
    prof = None
    if a.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    while e.has_unfinished():
        r = e.step()
        steps += 1
        (mixed_ms if r.num_prefill_tokens else decode_ms).append(r.step_time_s * 1e3)
        kv_tokens += sum(s.kv_tokens for s in r.sequences)
        for out in r.outputs:
            if out.error:
                raise RuntimeError(f"request {out.request_id} failed: {out.error}")
            produced += len(out.new_token_ids)
        preempt = r.cache.preemptions
    sync(a.device)
    dt = time.perf_counter() - t0
    if prof is not None:
        import pstats
        prof.disable()
        for key in os.environ.get("PROFILE_SORT", "cumtime").split(","):   # e.g. cumtime,tottime
            pstats.Stats(prof).sort_stats(key).print_stats(30)
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else 0.0  # noqa: E731
    return {"seconds": dt, "output_tokens": produced, "steps": steps,
            "kv_bytes_read": kv_tokens * per_token, "preemptions": preempt,
            "decode_steps": len(decode_ms), "decode_step_ms_median": med(decode_ms),
            "decode_s_total": sum(decode_ms) / 1e3, "mixed_steps": len(mixed_ms),
            "mixed_step_ms_median": med(mixed_ms), "mixed_s_total": sum(mixed_ms) / 1e3}


@torch.inference_mode()
def run_hf(hf, reqs, a) -> dict:
    def gen(batch):
        width = max(len(p) for p, _ in batch)
        new = max(o for _, o in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.int64)
        mask = torch.zeros(len(batch), width, dtype=torch.int64)
        for i, (p, _) in enumerate(batch):                   # left padding
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        out = hf.generate(ids.to(a.device), attention_mask=mask.to(a.device), do_sample=False,
                          max_new_tokens=new, min_new_tokens=new, eos_token_id=None, pad_token_id=0)
        if out.shape[1] != width + new:
            raise RuntimeError(f"transformers generated {out.shape[1] - width} tokens, expected {new}")
        return new * len(batch)

    gen([(p[:32], 4) for p, _ in reqs[:2]])                   # warm-up
    sync(a.device)
    t0 = time.perf_counter()
    generated = 0
    for i in range(0, len(reqs), a.hf_batch):
        generated += gen(reqs[i:i + a.hf_batch])
    sync(a.device)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "output_tokens": sum(o for _, o in reqs), "generated_tokens": generated}


def report_ours(budget: int, r: dict) -> None:
    """One line per engine run, printed before the slow baseline starts."""
    print(f"ours, budget {budget}: {r['output_tokens']} tokens in {r['seconds']:.1f} s, "
          f"{r['steps']} steps: {r['decode_steps']} decode-only (median "
          f"{r['decode_step_ms_median']:.2f} ms, {r['decode_s_total']:.1f} s), {r['mixed_steps']} "
          f"with prefill (median {r['mixed_step_ms_median']:.2f} ms, {r['mixed_s_total']:.1f} s)",
          flush=True)


def parse_args(argv=None):
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 | llama8b | tiny (2 layers, for CPU)")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--min-len", type=int, default=100)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--max-num-seqs", type=int, default=256, help="engine: sequences running at once")
    ap.add_argument("--budgets", type=int, nargs="+", default=[2048, 8192],
                    help="engine: token budget per step, one run each (the first is the headline)")
    ap.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                    help="engine: eager decode steps (default: CUDA graphs, the engine's default)")
    ap.add_argument("--overlap", choices=["auto", "on", "off"], default="auto",
                    help="engine: overlap scheduling (auto: the engine's default, on for CUDA)")
    ap.add_argument("--hf-batch", type=int, default=256, help="transformers: requests per static batch")
    ap.add_argument("--skip-hf", action="store_true", help="measure ours only")
    ap.add_argument("--profile", action="store_true", help="cProfile our run (slows it; top 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(RESULTS_DIR),
                    help="a file, or a folder for throughput-<device>.json (default: benchmarks/results/)")
    a = ap.parse_args(argv)
    if a.model not in ("smollm2", "llama8b", "tiny"):
        ap.error(f"--model must be smollm2, llama8b or tiny, got {a.model!r}")
    if min(a.budgets) < 1:
        ap.error("--budgets must be >= 1")
    for name in ("requests", "max_len", "max_num_seqs", "hf_batch"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.min_len > a.max_len:
        a.min_len = max(1, a.max_len // 4)
    if a.device.startswith("cuda") and not cuda:
        ap.error("--device cuda: no CUDA GPU here (use --device cpu --model tiny)")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
    hf, loaded = make_models(a.model, dtype, a.device)
    if 2 * a.max_len > loaded.config.max_position:
        print(f"throughput: --max-len {a.max_len} x 2 exceeds the model's context of "
              f"{loaded.config.max_position}", file=sys.stderr)
        return 2
    from benchmarks.e2e_decode import weight_bytes
    reqs = workload(a.requests, a.min_len, a.max_len, loaded.config.vocab_size, a.seed)
    runs = []
    for budget in a.budgets:
        runs.append((budget, run_ours(loaded, reqs, a, budget)))
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()
        report_ours(*runs[-1])
    ours = runs[0][1]
    expected = sum(o for _, o in reqs)
    for budget, r in runs:
        if r["output_tokens"] != expected:
            raise RuntimeError(f"engine (budget {budget}) produced {r['output_tokens']} tokens, "
                               f"expected {expected}")
    hf_res = None if a.skip_hf else run_hf(hf, reqs, a)
    wb, bw = weight_bytes(loaded.model), copy_bandwidth(a.device)
    rows = []
    for budget, r in runs:
        floor_s = (r["steps"] * wb + r["kv_bytes_read"]) / bw
        rows.append({"runtime": f"ours (continuous, budget {budget})",
                     "output_tok_s": expected / r["seconds"], "seconds": r["seconds"],
                     "steps": r["steps"], "preemptions": r["preemptions"], "floor_s": floor_s,
                     "fraction_of_floor": floor_s / r["seconds"],
                     "speedup": (hf_res["seconds"] / r["seconds"]) if hf_res else None,
                     **{k: r[k] for k in ("decode_steps", "decode_step_ms_median",
                                          "decode_s_total", "mixed_steps",
                                          "mixed_step_ms_median", "mixed_s_total")}})
    if hf_res is not None:
        rows.append({"runtime": f"transformers (static, batch {a.hf_batch})",
                     "output_tok_s": expected / hf_res["seconds"], "seconds": hf_res["seconds"],
                     "generated_tokens": hf_res["generated_tokens"]})
    summary = {"model": loaded.name, "device": a.device, "dtype": str(dtype), "requests": a.requests,
               "min_len": a.min_len, "max_len": a.max_len, "output_tokens": expected,
               "prompt_tokens": sum(len(p) for p, _ in reqs), "weight_bytes": wb,
               "copy_bandwidth_GBps": bw / 1e9, "kv_bytes_read": ours["kv_bytes_read"],
               "budgets": a.budgets, "headline_budget": a.budgets[0],
               "speedup_vs_transformers": (hf_res["seconds"] / ours["seconds"]) if hf_res else None,
               "target_speedup": 10.0}
    print(f"throughput: {a.requests} requests, lengths {a.min_len}-{a.max_len}, {loaded.name} "
          f"{dtype} on {a.device}")
    print_table(rows, ["runtime", "output_tok_s", "seconds", "steps", "preemptions",
                       "generated_tokens", "speedup", "fraction_of_floor", "decode_steps",
                       "decode_step_ms_median", "mixed_steps", "mixed_step_ms_median"])
    print(f"speedup ours (budget {a.budgets[0]}) / transformers: "
          f"{summary['speedup_vs_transformers'] or float('nan'):.2f} (target >= 10); "
          f"copy bandwidth {summary['copy_bandwidth_GBps']:.0f} GB/s")
    write_json(a.json, "throughput", rows, {"summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
