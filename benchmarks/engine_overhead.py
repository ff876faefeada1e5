"""Host time of the engine around the model: scheduling, batch packing, sampling, stop rules and
reports, per step and per sequence, with the model's forward replaced by a stub.

Why: the throughput run (benchmarks/throughput.py) on a GPU is bound by this host work (a decode
step of 256 sequences replays ~2-3 ms of GPU work and takes 6-8 ms), so it gets its own
measurement, one that runs on any machine. The stub keeps the engine's real `plan_batch` and the runner's
`DeviceBatch.build` (the host-to-device copies and the device-side derivation included) and hands back a fixed logits tensor for the rows that need
one, so sampling still runs an argmax over real-sized rows. Everything else is the engine's own
code: `Engine.step()` is timed whole.

Workload: the throughput benchmark's (R requests, prompt and output lengths uniform in
[--min-len, --max-len], ignore EOS), SmolLM2's vocabulary (49,152; --vocab to change), block 16,
budget 2,048 tokens per step, up to 256 sequences at once. Reported: median host ms per
decode-only step, that divided by the sequences in the step (µs per sequence), the same for
steps with prefill, and the total.

  python benchmarks/engine_overhead.py                       # 256 requests, 100-1,024 tokens
  python benchmarks/engine_overhead.py --profile             # + cProfile, top 25 by own time
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402


def stub_engine(a):
    """An engine on a 1-layer model whose forward is replaced by a stub (see the docstring)."""
    from benchmarks.e2e_decode import MODELS
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.network.llama import LlamaForCausalLM
    from llm_playground.model.weights.loader import LoadedModel
    cfg = dataclasses.replace(MODELS["smollm2"], num_layers=1, vocab_size=a.vocab, eos_token_ids=())
    model = LlamaForCausalLM(cfg, torch.float32, a.device).eval()     # never run: weights unset
    loaded = LoadedModel(model=model, config=cfg, tokenizer=None, chat_template=None,
                         name="stub", path=Path("stub"), dtype=torch.float32,
                         device=torch.device(a.device), weight_format="float32")
    blocks = a.requests * (-(-2 * a.max_len // 16)) + 64
    e = Engine(loaded, EngineConfig(num_blocks=blocks, block_size=16, max_num_seqs=a.max_num_seqs,
                                    max_num_batched_tokens=a.budget, cuda_graphs=False,
                                    report_blocks=False,
                                    overlap={"auto": None, "on": True, "off": False}[a.overlap]))
    logits = torch.randn(a.max_num_seqs + 8, a.vocab, device=a.device)                # (N, V)

    def forward(plan, prev_ids=None, proposed=None):
        """The runner's per-batch forward (ModelRunner._logits), stubbed: the batch is still
        built on the device."""
        e.runner.batch.build(plan, prev_ids)
        n = len(plan.logits)
        return logits[:n] if n else None      # a view: the sampler reads it, nothing writes it

    e.runner._logits = forward
    return e


def run(a) -> dict:
    from benchmarks.throughput import workload
    from llm_playground.model.engine.sampling_params import SamplingParams
    e = stub_engine(a)
    reqs = workload(a.requests, a.min_len, a.max_len, a.vocab, a.seed)
    for p, o in reqs:
        e.add_request(p, SamplingParams(max_tokens=o, ignore_eos=True))
    prof = None
    if a.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    decode, mixed = [], []        # (host ms, sequences scheduled)
    produced, errors = 0, []
    t0 = time.perf_counter()
    while e.has_unfinished():
        s = time.perf_counter()
        r = e.step()
        ms = (time.perf_counter() - s) * 1e3
        (mixed if r.num_prefill_tokens else decode).append((ms, max(1, r.num_decode_tokens)))
        for out in r.outputs:
            produced += len(out.new_token_ids)
            if out.error:
                errors.append(out.error)
    total = time.perf_counter() - t0
    expected = sum(o for _, o in reqs)
    if errors or produced != expected:   # a stub out of step with the runner fails every step
        raise RuntimeError(f"engine_overhead: {produced} of {expected} tokens, "
                           f"{len(errors)} errors (first: {errors[:1]})")
    if prof is not None:
        import pstats
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else 0.0  # noqa: E731
    return {"seconds": total, "steps": len(decode) + len(mixed),
            "decode_steps": len(decode), "decode_ms_median": med([m for m, _ in decode]),
            "decode_us_per_seq_median": med([m * 1e3 / n for m, n in decode]),
            "mixed_steps": len(mixed), "mixed_ms_median": med([m for m, _ in mixed]),
            "decode_s_total": sum(m for m, _ in decode) / 1e3,
            "mixed_s_total": sum(m for m, _ in mixed) / 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="where the stub's tensors live (cpu | cuda)")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--min-len", type=int, default=100)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--budget", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--overlap", choices=["auto", "on", "off"], default="auto",
                    help="overlap scheduling (auto: the engine's default, off on the CPU)")
    ap.add_argument("--label", default="", help="a name for this row (e.g. the commit)")
    ap.add_argument("--json", default=str(RESULTS_DIR),
                    help="a file, or a folder for engine_overhead-<device>.json (default: benchmarks/results/)")
    a = ap.parse_args(argv)
    if min(a.requests, a.min_len, a.max_len, a.max_num_seqs, a.budget, a.vocab) < 1:
        ap.error("sizes must be >= 1")
    r = run(a)
    row = {"label": a.label or "engine", **r}
    print(f"engine host overhead, stub model, {a.requests} requests of {a.min_len}-{a.max_len} "
          f"tokens, vocab {a.vocab}, device {a.device}")
    print_table([row], ["label", "steps", "decode_steps", "decode_ms_median",
                        "decode_us_per_seq_median", "mixed_steps", "mixed_ms_median",
                        "decode_s_total", "mixed_s_total", "seconds"])
    write_json(a.json, "engine_overhead", [row], {"config": vars(a)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
