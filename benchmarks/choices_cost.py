"""What reporting the sampler's choices (SamplingParams.logprobs = k) costs, same run.

1. The sampler alone on random logits of the default model's vocabulary (49,152): `sample` vs
   `sample_with_choices` (k candidates per stage, every stage on: repetition penalty,
   temperature, top-k, top-p, min-p), median of repeats, batch 1 and batch 64.
2. The engine end to end on the default model (or `--model tiny`), batch 1, the Chat tab's
   sampling settings (temperature 0.7, top-p 0.9, top-k 40): decode tok/s with logprobs off and
   on, runs interleaved off/on/off/on so a noisy machine hits both alike; the ratio is on/off.

  python benchmarks/choices_cost.py                 # default model, 64 new tokens, 3 rounds
  python benchmarks/choices_cost.py --model tiny --new-tokens 16 --rounds 1   # seconds
  python benchmarks/choices_cost.py --threads 1 --clock cpu   # on a shared, busy machine

`--clock cpu` times with the process's CPU time (time.process_time, also the engine's clock)
instead of wall time: with one thread that is the work done, whatever else runs on the cores.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402

PROMPT = ("The history of the printing press begins in the fifteenth century, when Johannes "
          "Gutenberg combined movable metal type, oil-based ink and a wooden press.")


CLOCK = time.perf_counter


def sampler_ms(V: int, N: int, k: int, device: str, reps: int = 30) -> tuple[float, float]:
    """Median ms of `sample` and of `sample_with_choices` on (N, V) logits."""
    from llm_playground.model.engine.sampler import make_generator, sample, sample_with_choices
    from llm_playground.model.engine.sampling_params import SamplingParams
    logits = torch.randn(N, V, device=device) * 3
    seen = [list(range(0, min(400, V), 7))] * N
    base = dict(temperature=0.7, top_k=40, top_p=0.9, min_p=0.02, repetition_penalty=1.1, seed=0)
    off = [SamplingParams(**base)] * N
    on = [SamplingParams(**base, logprobs=k)] * N
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(reps):
        for name, params, fn in (("off", off, sample), ("on", on, sample_with_choices)):
            gens = [make_generator(0, i, device) for i in range(N)]
            t0 = CLOCK()
            fn(logits, params, gens, seen)
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append((CLOCK() - t0) * 1e3)
    return statistics.median(times["off"]), statistics.median(times["on"])


def engine_tok_s(loaded, prompt_ids: list[int], new: int, logprobs: int | None) -> float:
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.engine.sampling_params import SamplingParams
    e = Engine(loaded, EngineConfig(num_blocks=-(-(len(prompt_ids) + new + 8) // 16) + 8,
                                    enable_prefix_caching=False), clock=CLOCK)
    params = SamplingParams(max_tokens=new, ignore_eos=True, temperature=0.7, top_p=0.9, top_k=40,
                            seed=0, logprobs=logprobs)
    e.generate(prompt_ids[:8], SamplingParams(max_tokens=2, ignore_eos=True))   # warm-up
    e.add_request(prompt_ids, params)
    tok = secs = 0.0
    while e.has_unfinished():
        r = e.step()
        if not r.num_prefill_tokens:
            tok, secs = tok + r.num_decode_tokens, secs + r.step_time_s
    return tok / secs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a .gguf / HF folder, 'tiny', or none: the default model")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens generated per run")
    ap.add_argument("--rounds", type=int, default=3, help="off/on pairs, interleaved")
    ap.add_argument("--k", type=int, default=8, help="candidates per stage (the Chat tab asks 8)")
    ap.add_argument("--vocab", type=int, default=49152, help="logits row length of the sampler rows")
    ap.add_argument("--reps", type=int, default=30, help="repeats of each sampler call")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or this process's CPU time (see the module doc)")
    ap.add_argument("--json", default=str(RESULTS_DIR), help="result file or folder ('' = none)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    rows = []
    for N in (1, 64):
        off, on = sampler_ms(args.vocab, N, args.k, args.device, args.reps)
        rows.append({"what": f"sampler, batch {N}, V {args.vocab}", "unit": "ms", "off": off, "on": on,
                     "on/off": on / off})
    if args.model == "tiny":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engine"))
        from engine_helpers import tiny_loaded
        loaded = tiny_loaded(0, args.device)
        prompt_ids = [b for b in PROMPT.encode()][:40]
    else:
        from llm_playground.model.weights.loader import load_model
        loaded = load_model(args.model, None, args.device)
        prompt_ids = loaded.tokenizer.encode(PROMPT)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        rates["off"].append(engine_tok_s(loaded, prompt_ids, args.new_tokens, None))
        rates["on"].append(engine_tok_s(loaded, prompt_ids, args.new_tokens, args.k))
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    rows.append({"what": f"engine decode ({loaded.name}, batch 1)", "unit": "tok/s", "off": off,
                 "on": on, "on/off": on / off})
    print(f"off = logprobs None, on = logprobs {args.k}; {args.clock} clock, {args.threads} thread(s)")
    print_table(rows, ["what", "unit", "off", "on", "on/off"])
    print("runs (tok/s):", {k: [round(x, 1) for x in v] for k, v in rates.items()})
    out = write_json(args.json, "choices_cost", rows,
                     {"clock": args.clock, "threads": args.threads, "k": args.k, "runs_tok_s": rates})
    if out:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
