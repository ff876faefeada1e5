"""Where an engine step's time goes: host time, device time, idle gaps, launches per token.

The throughput workload (R requests, prompt and output lengths uniform in [--min-len,
--max-len], greedy, EOS ignored; SmolLM2-135M shapes with random weights, bf16 on CUDA; `--model
tiny` = 2 layers, vocabulary 1,000, float32, for the CPU) runs through `Engine.step()` once per
mode: overlap scheduling off (plan, run, apply: the "before") and on (plan step N+1 while the
device runs step N: the "after"), both in one process on one machine. Per step it measures:
- host_ms: the step's wall time minus the time `collect` spent waiting for the device (the
  host's own work: scheduling, batch building, launching, stop rules, reports); on the CPU
  also minus the time inside `submit`, where the CPU computes the step (device_ms);
- wait_ms: time blocked in `collect` (waiting for the device, then reading the ids);
- device_ms: CUDA only: GPU time from the start to the end of the step's submitted work (CUDA
  events recorded around `submit`; launch gaps inside the step count, as the GPU waits there);
  on the CPU the time inside `submit` (the CPU computes synchronously);
- gap_ms: CUDA only: GPU idle time between the end of one step's work and the start of the
  next (the next step's first event minus the previous step's last), where the device waits
  for the host; the CPU has no such gap to measure (-);
- launches and kernels per output token, from torch.profiler over --profile-steps steps in
  the steady state of a second run: CUDA launch API calls (cudaLaunchKernel, cuLaunchKernel,
  cudaGraphLaunch: one per graph) and device kernels (a graph's kernels counted one by one);
  on the CPU: top-level torch ops dispatched (there are no launches).
Both modes should give the same tokens: in float32 they must (the tests check it); in bf16 a
step's batch may differ by a request between the modes (blocks are freed one call later with
overlap), and a near-tie can then flip, so the summary gives the share of identical requests.

  python benchmarks/step_anatomy.py                                  # CUDA: 256 requests
  python benchmarks/step_anatomy.py --model tiny --device cpu --requests 8 --max-len 32
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

MODES = (("overlap off", False), ("overlap on", True))
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx",
                "cudaGraphLaunch")


def loaded_model(name: str, device: str, dtype_name: str | None = None):
    """A LoadedModel of SmolLM2 shapes (or the tiny cut) with random N(0, 0.02) weights."""
    from benchmarks.e2e_decode import MODELS
    from llm_playground.model.network.llama import LlamaForCausalLM
    from llm_playground.model.network.weight_contract import expected_shapes
    from llm_playground.model.weights.loader import LoadedModel
    cfg = dataclasses.replace(MODELS["smollm2"], eos_token_ids=())
    if name == "tiny":
        cfg = dataclasses.replace(cfg, num_layers=2, vocab_size=1000)
    dtype = getattr(torch, dtype_name) if dtype_name else (
        torch.bfloat16 if device.startswith("cuda") else torch.float32)
    g = torch.Generator().manual_seed(0)
    shapes = expected_shapes(cfg)
    model = LlamaForCausalLM(cfg, dtype, device)
    model.load_weights(lambda n: torch.ones(shapes[n]) if "norm" in n
                       else torch.randn(shapes[n], generator=g) * 0.02)
    return LoadedModel(model=model.eval(), config=cfg, tokenizer=None, chat_template=None,
                       name=f"{name}-random", path=Path(name), dtype=dtype,
                       device=torch.device(device), weight_format=str(dtype).removeprefix("torch."))


def make_engine(loaded, reqs, a, overlap: bool):
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.engine import Engine
    blocks = sum(-(-(len(p) + o) // 16) for p, o in reqs) + 64
    return Engine(loaded, EngineConfig(num_blocks=blocks, block_size=16, overlap=overlap,
                                       max_num_seqs=a.max_num_seqs, report_blocks=False,
                                       max_num_batched_tokens=a.budget, cuda_graphs=a.cuda_graphs))


class StepClock:
    """Wraps a runner's submit and collect: CUDA events around each submit, the host time spent
    inside submit and blocked inside collect."""

    def __init__(self, runner, cuda: bool) -> None:
        self.cuda, self.events, self.submit_s, self.wait_s = cuda, [], 0.0, 0.0
        real_submit, real_collect = runner.submit, runner.collect

        def submit(plan):
            t = time.perf_counter()
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            real_submit(plan)
            if cuda:
                end.record()
                self.events.append((start, end))
            self.submit_s += time.perf_counter() - t

        def collect():
            t = time.perf_counter()
            out = real_collect()
            self.wait_s += time.perf_counter() - t
            return out

        runner.submit, runner.collect = submit, collect


def timed_run(loaded, reqs, a, overlap: bool) -> tuple[dict, dict]:
    """One mode over the workload: (figures, {request: ids})."""
    from llm_playground.model.engine.sampling_params import SamplingParams
    cuda = a.device.startswith("cuda")
    e = make_engine(loaded, reqs, a, overlap)
    for p, o in reqs[:8]:                                       # warm-up: kernels compile
        e.add_request(p[:64], SamplingParams(max_tokens=min(o, 8), ignore_eos=True))
    while e.has_unfinished():
        e.step()
    clock = StepClock(e.runner, cuda)
    rids = [e.add_request(p, SamplingParams(max_tokens=o, ignore_eos=True)) for p, o in reqs]
    ids = {r: [] for r in rids}
    host, wait, dev, submits = [], [], [], []
    t0 = time.perf_counter()
    while e.has_unfinished():
        n_ev, sub0, wait0 = len(clock.events), clock.submit_s, clock.wait_s
        s = time.perf_counter()
        r = e.step()
        wall = time.perf_counter() - s
        w, sub = clock.wait_s - wait0, clock.submit_s - sub0
        wait.append(w * 1e3)
        if cuda:
            host.append((wall - w) * 1e3)
        else:
            host.append((wall - w - sub) * 1e3)
            dev.append(sub * 1e3)                # the CPU computes inside submit
        submits.append(len(clock.events) - n_ev)
        for out in r.outputs:
            ids[out.request_id] += out.new_token_ids
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    gaps = []
    if cuda:
        ev = clock.events
        dev = [s.elapsed_time(t) for s, t in ev]
        gaps = [max(0.0, ev[i - 1][1].elapsed_time(ev[i][0])) for i in range(1, len(ev))]
    tokens = sum(len(v) for v in ids.values())
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
    return {"steps": len(host), "seconds": seconds, "output_tokens": tokens,
            "output_tok_s": tokens / seconds, "host_ms_p50": med(host), "wait_ms_p50": med(wait),
            "device_ms_p50": med(dev), "gap_ms_p50": med(gaps) if cuda else None,
            "gap_ms_total": sum(gaps) if cuda else None,
            "host_s_total": sum(host) / 1e3, "device_s_total": sum(dev) / 1e3,
            "discarded_rows": e.discarded_rows}, ids


def launch_counts(loaded, reqs, a, overlap: bool) -> dict:
    """Launches and kernels (CUDA) or top-level torch ops (CPU) per output token, profiled over
    --profile-steps steps after the first quarter of a fresh run."""
    from torch.profiler import ProfilerActivity, profile
    from llm_playground.model.engine.sampling_params import SamplingParams
    cuda = a.device.startswith("cuda")
    e = make_engine(loaded, reqs, a, overlap)
    for p, o in reqs:
        e.add_request(p, SamplingParams(max_tokens=o, ignore_eos=True))
    skip = max(1, sum(o for _, o in reqs) // max(1, len(reqs)) // 4)
    for _ in range(skip):
        if e.has_unfinished():
            e.step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    tokens = steps = 0
    with profile(activities=acts) as prof:
        while e.has_unfinished() and steps < a.profile_steps:
            r = e.step()
            steps += 1
            tokens += sum(len(o.new_token_ids) for o in r.outputs)
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    if cuda:
        launches = sum(1 for ev in events if ev.name in LAUNCH_CALLS)
        kernels = sum(1 for ev in events if ev.device_type == torch.autograd.DeviceType.CUDA)
    else:
        launches = sum(1 for ev in events if ev.name.startswith("aten::")
                       and (ev.cpu_parent is None or not ev.cpu_parent.name.startswith("aten::")))
        kernels = None
    per = lambda n: n / tokens if tokens and n is not None else None  # noqa: E731
    return {"profiled_steps": steps, "profiled_tokens": tokens,
            "launches_per_token": per(launches), "kernels_per_token": per(kernels)}


def parse_args(argv=None):
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 | tiny (2 layers, for the CPU)")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--min-len", type=int, default=100)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--budget", type=int, default=2048, help="token budget per step")
    ap.add_argument("--profile-steps", type=int, default=20, help="steps under torch.profiler")
    ap.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                    help="default: bfloat16 on CUDA, float32 on the CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(RESULTS_DIR),
                    help="a file, or a folder for step_anatomy-<device>.json (default: benchmarks/results/)")
    a = ap.parse_args(argv)
    if a.model not in ("smollm2", "tiny"):
        ap.error(f"--model must be smollm2 or tiny, got {a.model!r}")
    for name in ("requests", "min_len", "max_len", "max_num_seqs", "budget", "profile_steps"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.min_len > a.max_len:
        ap.error(f"--min-len ({a.min_len}) must not exceed --max-len ({a.max_len})")
    if a.device.startswith("cuda") and not cuda:
        ap.error("--device cuda: no CUDA GPU here (use --device cpu --model tiny)")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    from benchmarks.throughput import workload
    loaded = loaded_model(a.model, a.device, a.dtype)
    reqs = workload(a.requests, a.min_len, a.max_len, loaded.config.vocab_size, a.seed)
    rows, outputs = [], {}
    for name, overlap in MODES:
        figures, outputs[name] = timed_run(loaded, reqs, a, overlap)
        rows.append({"mode": name, **figures, **launch_counts(loaded, reqs, a, overlap)})
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()
    off_ids, on_ids = outputs["overlap off"], outputs["overlap on"]
    same = off_ids == on_ids
    identical = sum(off_ids[r] == on_ids.get(r) for r in off_ids) / max(1, len(off_ids))
    print(f"step anatomy, {a.model} ({loaded.dtype}) on {a.device}, {a.requests} requests of "
          f"{a.min_len}-{a.max_len} tokens, budget {a.budget}; requests with the same tokens "
          f"with overlap on and off: {identical:.0%}")
    print_table(rows, ["mode", "steps", "output_tok_s", "host_ms_p50", "wait_ms_p50",
                       "device_ms_p50", "gap_ms_p50", "gap_ms_total", "launches_per_token",
                       "kernels_per_token", "discarded_rows"])
    off, on = rows
    summary = {"same_tokens": same, "identical_requests": identical,
               "dtype": str(loaded.dtype).removeprefix("torch."),
               "speedup_overlap": off["seconds"] / on["seconds"],
               "host_ms_p50_ratio": (on["host_ms_p50"] / off["host_ms_p50"]
                                     if off["host_ms_p50"] else None)}
    write_json(a.json, "step_anatomy", rows, {"summary": summary, "config": vars(a)})
    if not same and loaded.dtype == torch.float32:
        print("step_anatomy: overlap on and off gave different tokens in float32", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
