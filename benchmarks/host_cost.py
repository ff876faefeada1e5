"""Host cost of the engine, counted: Python function calls per engine step and per generated
token (cProfile), and host milliseconds per step, for this tree and for an older tree.

Why counts: the host work per step (scheduling, planning, batch building, applying the sampled
ids, reports) is what bounds the GPU throughput run, and on a shared machine its time is noisy.
The number of Python calls (functions and builtins, as cProfile counts them) is deterministic:
the same workload gives the same count on every run and machine, so it is the primary metric;
a change that removes work shows as fewer calls. The time is reported beside it.

Workload: benchmarks/throughput.py's generator (R requests, prompt and output lengths uniform in
[--min-len, --max-len], random ids, EOS ignored, fixed seed), all added at once, then
`Engine.step()` until idle, on a tiny random Llama (throughput.py's `--model tiny` shapes: 2
layers, hidden 576, 9 query / 3 KV heads, head dim 64, vocabulary 1,000; built here without
transformers) in float32 on the CPU, block 16, budget --budget tokens per step, a KV pool that
holds every request (no preemption), report_blocks off (as throughput.py). Each engine first
runs a short warm-up (two requests), not counted.

Reported per tree:
- calls_per_step / calls_per_token: every Python call of the measured loop (the model's forward
  included), per step and per output token;
- host_calls_per_step / host_calls_per_token: the same without the calls made inside the
  model's forward and logits projection (`model(...)`, `model.compute_logits`): the engine's own
  work (the profiler is paused inside them);
- host_ms_per_step: wall time of the loop minus the time inside the forward and logits
  projection, per step, best of --repeats unprofiled runs (noisy on a shared machine).

The older tree (--base, default /work/main/.base: a plain export of ff0aedf, before the
llm_playground package) runs in a subprocess with its own module names (model.engine,
model.engine_config, ...); its Engine takes the same EngineConfig fields used here.

  python benchmarks/host_cost.py                       # this tree (overlap off) and --base
  python benchmarks/host_cost.py --trees ours --overlap on
  python benchmarks/host_cost.py --before /work/main     # + a checkout of this layout, "before"
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = str(Path(__file__).resolve().parents[1] / ".base")   # git archive ff0aedf | tar -x -C .base

# Module names of the two layouts: (ModelConfig, LlamaForCausalLM, LoadedModel, expected_shapes,
# Engine, EngineConfig, SamplingParams).
MODULES = {
    "ours": ("llm_playground.model.network.config", "llm_playground.model.network.llama",
             "llm_playground.model.weights.loader", "llm_playground.model.network.weight_contract",
             "llm_playground.model.engine.engine", "llm_playground.model.engine.config",
             "llm_playground.model.engine.sampling_params"),
    "base": ("model.config", "model.llama", "model.loader", "model.weights", "model.engine",
             "model.engine_config", "model.sampling_params"),
}


def workload(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[tuple[list[int], int]]:
    """throughput.py's generator (copied: the old tree's child process cannot import ours)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p, o = rng.randint(lo, hi), rng.randint(lo, hi)
        out.append(([rng.randrange(vocab) for _ in range(p)], o))
    return out


def _import(layout: str):
    import importlib
    return [importlib.import_module(m) for m in MODULES[layout]]


def tiny_model(layout: str):
    """A LoadedModel: 2-layer Llama of SmolLM2's head layout, vocabulary 1,000, random float32."""
    cfg_m, llama_m, loader_m, shapes_m, *_ = _import(layout)
    cfg = cfg_m.ModelConfig(vocab_size=1000, hidden_size=576, intermediate_size=1536,
                            num_layers=2, num_heads=9, num_kv_heads=3, head_dim=64,
                            max_position=8192, rope_theta=100000.0, tie_word_embeddings=True,
                            eos_token_ids=())
    g = torch.Generator().manual_seed(0)
    weights = {n: (torch.ones(s) if "norm" in n else torch.randn(s, generator=g) * 0.02)
               for n, s in shapes_m.expected_shapes(cfg).items()}
    model = llama_m.LlamaForCausalLM(cfg, torch.float32, "cpu")
    model.load_weights(lambda n: weights[n])
    return loader_m.LoadedModel(model=model.eval(), config=cfg, tokenizer=None,
                                chat_template=None, name="tiny-random", path=Path("tiny"),
                                dtype=torch.float32, device=torch.device("cpu"),
                                weight_format="float32")


class ForwardMeter:
    """Wraps the model's forward and logits projection: adds up the seconds spent inside them
    and pauses the profiler (if any) while they run."""

    def __init__(self, model, profiler: cProfile.Profile | None = None) -> None:
        self.seconds = 0.0
        self.profiler = profiler
        for name in ("forward", "compute_logits"):
            setattr(model, name, self._wrap(getattr(model, name)))

    def _wrap(self, fn):
        def timed(*args, **kwargs):
            prof = self.profiler
            if prof is not None:
                prof.disable()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                if prof is not None:
                    prof.enable()
        return timed


def run_once(layout: str, a, profile: bool, count_forward: bool = False) -> dict:
    """One fresh engine, warm-up, then the workload; calls counted when `profile` (the
    forward's too with `count_forward`)."""
    *_, engine_m, config_m, params_m = _import(layout)
    loaded = tiny_model(layout)
    reqs = workload(a.requests, a.min_len, a.max_len, loaded.config.vocab_size, a.seed)
    bs = 16
    fields = dict(num_blocks=sum(-(-(len(p) + o) // bs) for p, o in reqs) + 64, block_size=bs,
                  max_num_seqs=a.max_num_seqs, max_num_batched_tokens=a.budget,
                  cuda_graphs=False, report_blocks=False)
    if layout == "ours":
        fields["overlap"] = a.overlap == "on"
    e = engine_m.Engine(loaded, config_m.EngineConfig(**fields))
    sp = params_m.SamplingParams
    for p, _ in reqs[:2]:                                        # warm-up, not counted
        e.add_request(p[:16], sp(max_tokens=4, ignore_eos=True))
    while e.has_unfinished():
        e.step()
    prof = cProfile.Profile() if profile else None
    meter = ForwardMeter(loaded.model, None if count_forward else prof)
    steps = produced = 0
    if prof is not None:
        prof.enable()
    t0 = time.perf_counter()
    for p, o in reqs:
        e.add_request(p, sp(max_tokens=o, ignore_eos=True))
    while e.has_unfinished():
        r = e.step()
        steps += 1
        for out in r.outputs:
            produced += len(out.new_token_ids)
    wall = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
    expected = sum(o for _, o in reqs)
    if produced != expected:
        raise RuntimeError(f"{layout}: {produced} tokens, expected {expected}")
    row = {"steps": steps, "output_tokens": produced, "wall_s": wall,
           "forward_s": meter.seconds, "host_s": wall - meter.seconds}
    if prof is not None:
        st = pstats.Stats(prof)
        row["host_calls"] = st.total_calls
        row["top"] = [[f"{Path(f).name}:{ln}({fn})", nc, round(tt, 4)] for (f, ln, fn), (_, nc, tt, _, _)
                      in sorted(st.stats.items(), key=lambda kv: -kv[1][1])[:a.top]]
    return row


def measure(layout: str, a) -> dict:
    """Counts from one profiled run (the forward's calls counted in a second profiled run with
    the profiler left on inside it), time from the best of --repeats unprofiled runs."""
    prof = run_once(layout, a, profile=True)
    total = run_once(layout, a, True, count_forward=True)["host_calls"] if a.count_forward else None
    timed = [run_once(layout, a, profile=False) for _ in range(a.repeats)]
    best = min(timed, key=lambda r: r["host_s"])
    steps, toks = prof["steps"], prof["output_tokens"]
    row = {"tree": layout, "steps": steps, "output_tokens": toks,
           "host_calls": prof["host_calls"],
           "host_calls_per_step": prof["host_calls"] / steps,
           "host_calls_per_token": prof["host_calls"] / toks,
           "host_ms_per_step": best["host_s"] / best["steps"] * 1e3,
           "forward_ms_per_step": best["forward_s"] / best["steps"] * 1e3,
           "host_ms_per_step_runs": [round(r["host_s"] / r["steps"] * 1e3, 4) for r in timed],
           "top_by_calls": prof["top"]}
    if total is not None:
        row.update(calls=total, calls_per_step=total / steps, calls_per_token=total / toks)
    return row


def child_args(a) -> list[str]:
    return ["--requests", str(a.requests), "--min-len", str(a.min_len), "--max-len",
            str(a.max_len), "--budget", str(a.budget), "--max-num-seqs", str(a.max_num_seqs),
            "--seed", str(a.seed), "--repeats", str(a.repeats), "--top", str(a.top),
            "--overlap", a.overlap,
            *([] if a.count_forward else ["--no-count-forward"])]


def measure_tree(layout: str, path: str, a) -> dict:
    """The row of the tree at `path` (module names of `layout`), from a subprocess that imports
    it first on its path."""
    env = dict(os.environ, PYTHONPATH=path)
    cmd = [sys.executable, __file__, "--child", layout, *child_args(a)]
    out = subprocess.run(cmd, env=env, cwd=path, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the run of {path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", nargs="+", choices=["ours", "base"], default=["ours", "base"])
    ap.add_argument("--base", default=DEFAULT_BASE, help="the old tree (a plain export of ff0aedf)")
    ap.add_argument("--before", help="also measure another checkout of this layout (e.g. the "
                    "commit before a change), in a subprocess: row 'before'")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--min-len", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--budget", type=int, default=2048, help="token budget per step")
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--overlap", choices=["on", "off"], default="off",
                    help="this tree's overlap scheduling (the old tree has none)")
    ap.add_argument("--repeats", type=int, default=2, help="unprofiled runs for the time")
    ap.add_argument("--top", type=int, default=25, help="functions by call count kept in the JSON")
    ap.add_argument("--no-count-forward", dest="count_forward", action="store_false",
                    help="skip the run that counts the forward's calls too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results"),
                    help="a file, or a folder for host_cost-<device>.json")
    ap.add_argument("--child", choices=["ours", "base"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    for name in ("requests", "min_len", "max_len", "budget", "max_num_seqs", "repeats"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.min_len > a.max_len:
        ap.error("--min-len must be <= --max-len")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if a.child:                                          # the old tree, in its own process
        print(json.dumps(measure(a.child, a)))
        return 0
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_common import print_table, write_json
    rows = []
    if a.before:
        rows.append(dict(measure_tree("ours", a.before, a), tree=f"before (overlap {a.overlap})",
                         path=a.before))
    for t in a.trees:
        if t == "ours":
            rows.append(dict(measure("ours", a), tree=f"ours (overlap {a.overlap})"))
        else:
            rows.append(dict(measure_tree("base", a.base, a), path=a.base))
    print(f"host cost: {a.requests} requests, lengths {a.min_len}-{a.max_len}, budget {a.budget}, "
          f"tiny random Llama, float32, CPU")
    print_table(rows, ["tree", "steps", "output_tokens", "calls_per_token", "host_calls_per_step",
                       "host_calls_per_token", "host_ms_per_step", "forward_ms_per_step"])
    ours = next((r for r in rows if r["tree"].startswith("ours")), None)
    for ref in (r for r in rows if r is not ours):
        if ours is not None:
            print(f"ours / {ref['tree']}: host calls per token "
                  f"{ours['host_calls_per_token'] / ref['host_calls_per_token']:.3f}x, "
                  f"host ms per step {ours['host_ms_per_step'] / ref['host_ms_per_step']:.3f}x")
    summary = {k: getattr(a, k) for k in ("requests", "min_len", "max_len", "budget",
                                          "max_num_seqs", "overlap", "seed", "repeats", "base",
                                          "before")}
    write_json(a.json, "host_cost", rows, {"summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
