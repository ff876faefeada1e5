"""Chunked prefill: inter-token latency of running decodes when a long prompt arrives mid-stream.

N decodes (default 64, random 64-token prompts, ignore_eos) run on the engine. After a warm-up
the measurement window of W steps starts; in the disturbed modes a long random prompt (default
16k tokens) is added at its start. Every decode gets one token per step (the scheduler runs
decodes first), so the inter-token latency each running decode sees is the wall time of the step
(time between two `Engine.step()` returns, host sync included: sampling reads the tokens back).
Three runs of the same workload on fresh engines:

  undisturbed   no long prompt
  chunked       enable_chunked_prefill, token budget --budget (EngineConfig.max_num_batched_tokens):
                decodes first, the prompt fills the rest of each step's budget
  unchunked     enable_chunked_prefill off, budget = prompt + N: the whole prompt in one step
                beside the decodes (with a budget below the prompt the engine would defer the
                prompt until no decode is running, starving it instead of stalling the decodes)

The window is long enough to cover the chunked prefill (at least ceil(P / (budget - N)) + 8
steps). Reported per mode: p50 / p99 / max of the decodes' inter-token latency over the window,
the long prompt's time to first token, and p99(chunked) / p99(undisturbed) (target <= 1.5 on GPU)
with p99(unchunked) / p99(undisturbed) beside it.

  python benchmarks/chunked_prefill.py --model tiny --device cpu --decodes 8 --prompt-len 1024
  python benchmarks/chunked_prefill.py --model smollm2-random --device cuda      # GPU, full scale
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402

RANDOM_SHAPES = {"smollm2-random": "smollm2", "llama3-8b-random": "llama8b"}
MODES = ("undisturbed", "chunked", "unchunked")


def random_loaded(shape: str, dtype: torch.dtype, device: str, min_context: int):
    """Our Llama with random N(0, 0.02) weights (norms 1) of real shapes, no tokenizer.
    The RoPE table is extended to min_context when the shapes' trained context is shorter."""
    from benchmarks.e2e_decode import MODELS
    from llm_playground.model.network.llama import LlamaForCausalLM
    from llm_playground.model.weights.loader import LoadedModel
    from llm_playground.model.network.weight_contract import expected_shapes
    cfg = MODELS[shape]
    cfg = dataclasses.replace(cfg, max_position=max(cfg.max_position, min_context), eos_token_ids=())
    g = torch.Generator(device=device).manual_seed(0)

    def weight(name: str) -> torch.Tensor:
        shape_ = expected_shapes(cfg)[name]
        if "norm" in name:
            return torch.ones(shape_, dtype=dtype, device=device)
        return torch.randn(shape_, generator=g, dtype=dtype, device=device) * 0.02

    model = LlamaForCausalLM(cfg, dtype, device)
    model.load_weights(weight)
    return LoadedModel(model=model.eval(), config=cfg, tokenizer=None, chat_template=None,
                       name=shape + "-random", path=Path(shape), dtype=dtype,
                       device=torch.device(device), weight_format=str(dtype).removeprefix("torch."))


def load_for(a):
    min_context = a.prompt_len + a.decode_prompt + a.warmup + a.steps + 64
    if a.model in RANDOM_SHAPES:
        dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
        return random_loaded(RANDOM_SHAPES[a.model], dtype, a.device, min_context)
    from benchmarks.engine_models import load
    return load(None if a.model == "default" else a.model, a.dtype, a.device)


def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default rule), q in [0, 100]."""
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def run_mode(loaded, a, mode: str, decode_prompts: list[list[int]], long_prompt: list[int], window: int) -> dict:
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.sampling_params import SamplingParams
    N, P, bs = a.decodes, len(long_prompt), 16
    budget = P + N if mode == "unchunked" else a.budget
    per_decode = a.decode_prompt + a.warmup + window + 8    # max_tokens: no decode ends in the window
    num_blocks = N * -(-per_decode // bs) + -(-(P + window + 8) // bs) + 16
    e = Engine(loaded, EngineConfig(num_blocks=num_blocks, block_size=bs, max_num_batched_tokens=budget,
                                    max_num_seqs=N + 1, enable_prefix_caching=False,
                                    enable_chunked_prefill=mode != "unchunked"))
    params = SamplingParams(max_tokens=per_decode, ignore_eos=True)
    for p in decode_prompts:
        e.add_request(p, params)
    for _ in range(a.warmup + -(-N * a.decode_prompt // budget)):   # prefill the decodes, then decode
        e.step()
    sync = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)
    long_id, ttft = None, None
    if mode != "undisturbed":
        long_id = e.add_request(long_prompt, SamplingParams(max_tokens=window + 4, ignore_eos=True))
    itl, prefill_steps = [], 0
    sync()
    t_start = last = time.perf_counter()
    for _ in range(window):
        r = e.step()
        now = time.perf_counter()
        if r.num_decode_tokens < N:
            raise RuntimeError(f"{mode}: a step decoded {r.num_decode_tokens} of {N} running sequences "
                               "(decodes finished or were preempted: the window is too long?)")
        itl.append(now - last)
        last = now
        prefill_steps += r.num_prefill_tokens > 0
        if long_id is not None and ttft is None and long_id in r.ttft_s:
            ttft = now - t_start
    if long_id is not None and ttft is None:
        raise RuntimeError(f"{mode}: the {P}-token prompt got no token within {window} steps")
    return {"mode": mode, "budget": budget, "steps": window, "prefill_steps": prefill_steps,
            "itl_p50_ms": 1e3 * percentile(itl, 50), "itl_p99_ms": 1e3 * percentile(itl, 99),
            "itl_max_ms": 1e3 * max(itl), "long_prompt_ttft_s": ttft}


def parse_args(argv=None):
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-random" if cuda else "tiny",
                    help="tiny | default | smollm2-random | llama3-8b-random | PATH")
    ap.add_argument("--dtype", default=None, help="weight format for default / PATH models")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--decodes", type=int, default=64, help="running decodes")
    ap.add_argument("--decode-prompt", type=int, default=64, help="prompt length of each decode")
    ap.add_argument("--prompt-len", type=int, default=16384, help="the long prompt's length")
    ap.add_argument("--budget", type=int, default=2048, help="token budget per step (chunked mode)")
    ap.add_argument("--warmup", type=int, default=8, help="steps before the window")
    ap.add_argument("--steps", type=int, default=64, help="window length (raised to cover the prefill)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(RESULTS_DIR),
                    help="a file, or a folder for chunked_prefill-<device>.json (default: benchmarks/results/)")
    a = ap.parse_args(argv)
    for name in ("decodes", "decode_prompt", "prompt_len", "warmup", "steps"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.budget <= a.decodes:
        ap.error(f"--budget ({a.budget}) must exceed --decodes ({a.decodes}): decodes take one token each")
    if a.device.startswith("cuda") and not cuda:
        ap.error("--device cuda: no CUDA GPU here (use --device cpu --model tiny)")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    loaded = load_for(a)
    ctx = loaded.config.max_position
    if a.prompt_len + a.steps + 8 > ctx:
        print(f"chunked_prefill: --prompt-len {a.prompt_len} does not fit the model's context of {ctx}",
              file=sys.stderr)
        return 2
    window = max(a.steps, -(-a.prompt_len // (a.budget - a.decodes)) + 8)
    rng = random.Random(a.seed)
    V = loaded.config.vocab_size
    decode_prompts = [[rng.randrange(V) for _ in range(a.decode_prompt)] for _ in range(a.decodes)]
    long_prompt = [rng.randrange(V) for _ in range(a.prompt_len)]
    # Warm-up (Triton compile / autotune for every shape class, allocator): both disturbed modes.
    run_mode(loaded, a, "chunked", decode_prompts, long_prompt[:a.budget], 4)
    run_mode(loaded, a, "unchunked", decode_prompts, long_prompt, 2)
    rows = [run_mode(loaded, a, m, decode_prompts, long_prompt, window) for m in MODES]
    base = rows[0]["itl_p99_ms"]
    summary = {"model": loaded.name, "device": str(loaded.device), "decodes": a.decodes,
               "prompt_len": a.prompt_len, "budget": a.budget,
               "p99_chunked_over_undisturbed": rows[1]["itl_p99_ms"] / base,
               "p99_unchunked_over_undisturbed": rows[2]["itl_p99_ms"] / base, "target": 1.5}
    summary["target_met"] = summary["p99_chunked_over_undisturbed"] <= summary["target"]
    print(f"chunked prefill: {a.decodes} decodes, {a.prompt_len}-token prompt, budget {a.budget}, "
          f"{loaded.name} on {loaded.device}")
    print_table(rows, list(rows[0]))
    print()
    print_table([summary], ["p99_chunked_over_undisturbed", "p99_unchunked_over_undisturbed",
                            "target", "target_met"])
    write_json(a.json, "chunked_prefill", rows, {"summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
