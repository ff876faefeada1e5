"""Serving load: output tokens/s through `playground serve`'s HTTP server vs the same engine in
process, on the same workload, with time-to-first-token and inter-token-latency percentiles.

Workload (as benchmarks/throughput.py): R requests (default 256), prompt and output lengths each
uniform in [--min-len, --max-len], random prompt ids, EOS ignored (vLLM's `ignore_eos`), greedy,
fixed seed. Model: random weights of the SmolLM2-135M shapes (or llama8b; `tiny` = 2 layers and
a 1,000-token vocabulary, for the CPU), N(0, 0.02), bf16 on CUDA / float32 on CPU, built from a
seeded generator so the server process gets the same weights; its tokenizer writes token i as
the fixed-width text "0000i " so a client can count the tokens in every streamed chunk. Both
sides run the same EngineConfig: block size 16, a pool for every request at once (no
preemption), --budget tokens per step, --max-num-seqs, CUDA graphs and overlap as the engine's
defaults, per-block reports off unless --report-blocks (the inspector needs them on).

- in-process: every request is added at t0, then Engine.step() until idle; a request's first
  token time and the gaps between its outputs are taken when the step returns. The loop runs on
  a thread of its own, as the server's engine does: on a loaded CPU, torch's two-thread OpenMP
  regions called from the main thread ran up to 20x slower than from a second thread (measured
  here, 2 shared cores, load average 7), which would make the comparison about that, not HTTP.
- server: a process of its own (`--role server`, uvicorn; its engine on a thread,
  llm_playground/server/bridge.py, or with --engine-process in a third process,
  server/engine_process.py), the load generator here: R concurrent streaming
  POST /v1/completions (at most --concurrency at once; default all) over httpx2, TTFT from
  sending a request to its first token event, ITL = gap between events / tokens in the event.
Each side gets the same warm-up first (32 short requests, then a prompt longer than the budget).
throughput ratio = server tok/s / in-process tok/s (the issue's target: >= 0.9 with streaming).
On a shared CPU the client, the server's event loop and the engine share the cores: the ratio
then measures that contention too; compare figures only within one run.

  python benchmarks/serve_load.py --model tiny --device cpu --requests 32 --max-len 64
  python benchmarks/serve_load.py                    # GPU: 256 requests, SmolLM2 shapes, bf16
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402
from benchmarks.load_generator import _tokens_in, run_load  # noqa: E402,F401

BLOCK = 16


# ---- the model and the engine, built the same way in both processes --------------------------
def id_tokenizer(vocab: int):
    """Token i <-> the text f"{i:0Wd} " (W digits): every chunk's tokens can be counted."""
    from llm_playground import bpe
    w = len(str(vocab - 1))
    return bpe.Tokenizer(bpe.patterns.GPT2, {i: (str(i).zfill(w) + " ").encode() for i in range(vocab)},
                         None, {}, name="ids"), w + 1


def build_loaded(name: str, device: str, seed: int):
    """A LoadedModel of random weights (the same in every process for the same arguments)."""
    from benchmarks.e2e_decode import MODELS
    from llm_playground.model.network.llama import LlamaForCausalLM
    from llm_playground.model.network.weight_contract import expected_shapes
    from llm_playground.model.weights.loader import LoadedModel
    cfg = MODELS["smollm2" if name == "tiny" else name]
    if name == "tiny":
        cfg = dataclasses.replace(cfg, num_layers=2, vocab_size=1000)
    cfg = dataclasses.replace(cfg, eos_token_ids=())
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    g = torch.Generator().manual_seed(seed)
    shapes = expected_shapes(cfg)
    model = LlamaForCausalLM(cfg, dtype, device)
    model.load_weights(lambda n: torch.ones(shapes[n]) if "norm" in n
                       else torch.randn(shapes[n], generator=g) * 0.02)
    tok, _ = id_tokenizer(cfg.vocab_size)
    return LoadedModel(model=model.eval(), config=cfg, tokenizer=tok, chat_template=None,
                       name=f"{name}-random", path=Path(name), dtype=dtype,
                       device=torch.device(device), weight_format=str(dtype).removeprefix("torch."))


def build_engine(a):
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.engine import Engine
    loaded = build_loaded(a.model, a.device, a.seed)
    works = [workload(a, loaded.config.vocab_size, rep) for rep in range(a.repeats)]
    blocks = a.kv_blocks or max(sum(-(-(len(p) + o) // BLOCK) for p, o in w) for w in works) + 64
    overlap = {"auto": None, "on": True, "off": False}[a.overlap]
    cfg = EngineConfig(num_blocks=blocks, block_size=BLOCK, max_num_seqs=a.max_num_seqs,
                       max_num_batched_tokens=a.budget, cuda_graphs=a.cuda_graphs,
                       report_blocks=a.report_blocks, overlap=overlap, device=a.device)
    return Engine(loaded, cfg), works


def workload(a, vocab: int, rep: int = 0) -> list[tuple[list[int], int]]:
    """(prompt ids, output length) pairs, both lengths uniform in [min_len, max_len]; repeat
    `rep` draws its own (no prefix-cache hits across repeats)."""
    rng = random.Random(a.seed * 1000 + rep)
    out = []
    for _ in range(a.requests):
        p, o = rng.randint(a.min_len, a.max_len), rng.randint(a.min_len, a.max_len)
        out.append(([rng.randrange(vocab) for _ in range(p)], o))
    return out


def warmup_requests(reqs, budget: int, max_len: int) -> list[tuple[list[int], int]]:
    """32 short requests, then one prompt longer than the budget (kernels compile, pools grow)."""
    long_prompt = [t for p, _ in reqs for t in p][:min(budget + 100, max_len - 8)]
    return [(p, min(o, 32)) for p, o in reqs[:32]] + [(long_prompt, 4)]


# ---- in process --------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_inprocess(engine, reqs, device: str, warm: bool) -> dict:
    """`_inprocess` on a thread of its own (see the module docstring)."""
    import threading
    box: dict = {}

    def target():
        try:
            box["row"] = _inprocess(engine, reqs, device, warm)
        except BaseException as e:           # re-raised on the caller's thread
            box["error"] = e
    t = threading.Thread(target=target, name="engine")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["row"]


def _inprocess(engine, reqs, device: str, warm: bool) -> dict:
    from llm_playground.model.engine.sampling_params import SamplingParams
    if warm:
        for p, o in warmup_requests(reqs, engine.config.max_num_batched_tokens, engine.max_model_len):
            engine.add_request(p, SamplingParams(max_tokens=o, ignore_eos=True))
        while engine.has_unfinished():
            engine.step()
    sync(device)
    t0 = time.perf_counter()
    rids = [engine.add_request(p, SamplingParams(max_tokens=o, ignore_eos=True)) for p, o in reqs]
    first: dict = {}
    last: dict = {}
    itl: list[float] = []
    tokens = 0
    while engine.has_unfinished():
        r = engine.step()
        now = time.perf_counter()
        for out in r.outputs:
            if out.error:
                raise RuntimeError(f"request {out.request_id} failed: {out.error}")
            k = len(out.new_token_ids)
            if not k:
                continue
            tokens += k
            if out.request_id not in first:
                first[out.request_id] = now - t0
            elif out.request_id in last:
                itl += [(now - last[out.request_id]) / k] * k
            last[out.request_id] = now
    wall = time.perf_counter() - t0
    return summary("in-process engine", tokens, wall, [first[r] for r in rids], itl)


# ---- through the server ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_argv(a, port: int) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--role", "server", "--port", str(port),
            "--model", a.model, "--device", a.device, "--requests", str(a.requests),
            "--min-len", str(a.min_len), "--max-len", str(a.max_len), "--seed", str(a.seed),
            "--max-num-seqs", str(a.max_num_seqs), "--budget", str(a.budget),
            "--overlap", a.overlap, "--repeats", str(a.repeats)]
    if a.kv_blocks:
        argv += ["--kv-blocks", str(a.kv_blocks)]
    if not a.cuda_graphs:
        argv.append("--no-cuda-graphs")
    if a.report_blocks:
        argv.append("--report-blocks")
    if a.engine_process:
        argv.append("--engine-process")
    if a.threads:
        argv += ["--threads", str(a.threads)]
    return argv


def engine_only(a):
    """The engine alone (the engine process's factory, --engine-process)."""
    if a.threads:
        torch.set_num_threads(a.threads)
    return build_engine(a)[0]


def serve_forever(a) -> int:
    """`--role server`: the engine behind uvicorn on 127.0.0.1:--port until terminated."""
    import functools
    from llm_playground.server.app import serve
    from llm_playground.server.config import ServerConfig
    config = ServerConfig(port=a.port, max_queue=max(1024, 2 * a.requests), model_name="bench")
    if a.engine_process:
        serve(None, config, log_level="warning", factory=functools.partial(engine_only, a))
    else:
        serve(build_engine(a)[0], config, log_level="warning")
    return 0


class Server:
    """The server process (`--role server`) while the block runs: `with Server(a) as url:`."""

    def __init__(self, a) -> None:
        self.a = a

    def __enter__(self) -> str:
        a = self.a
        import httpx2
        port = free_port()
        self.log = log = tempfile.NamedTemporaryFile("w+", prefix="serve_load-", suffix=".log", delete=False)
        root = str(Path(__file__).resolve().parents[1])          # the repository first, then the caller's path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.proc = proc = subprocess.Popen(server_argv(a, port), stdout=log, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + a.start_timeout
        try:
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"the server exited ({proc.returncode}): {log.read()[-2000:]}")
                try:
                    if httpx2.get(base + "/health", timeout=1).status_code == 200:
                        return base
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not answer /health in {a.start_timeout} s")
                time.sleep(0.2)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        os.unlink(self.log.name)


def run_server(base: str, reqs, vocab: int, a, warm: bool) -> dict:
    """One run of the workload through the server at `base` (after the warm-up when `warm`)."""
    import httpx2
    _, width = id_tokenizer(vocab)
    url = base + "/v1/completions"
    if warm:
        w = warmup_requests(reqs, a.budget, 8192)
        asyncio.run(run_load(url, w, width, len(w)))
    wall, res = asyncio.run(run_load(url, reqs, width, a.concurrency or len(reqs)))
    tokens = sum(t for _, _, t in res)
    metrics = httpx2.get(base + "/metrics", timeout=10).text
    preempt = next((float(line.split()[-1]) for line in metrics.splitlines()
                    if line.startswith("playground_preemptions_total ")), None)
    row = summary("through the server (streaming)", tokens, wall, [f for f, _, _ in res],
                  [x for _, i, _ in res for x in i])
    row["server_preemptions"] = preempt
    return row


# ---- figures -----------------------------------------------------------------------------------
def pct(xs, q) -> float | None:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else None


def summary(name: str, tokens: int, wall: float, ttft: list, itl: list) -> dict:
    row = {"runtime": name, "output_tokens": tokens, "seconds": wall, "output_tok_s": tokens / wall}
    for q in (50, 90, 99):
        row[f"ttft_p{q}_ms"] = pct(ttft, q) * 1e3 if ttft else None
    for q in (50, 90, 99):
        row[f"itl_p{q}_ms"] = pct(itl, q) * 1e3 if itl else None
    return row


def parse_args(argv=None):
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", choices=["smollm2", "llama8b", "tiny"],
                    help="random-weight shapes: smollm2 | llama8b | tiny (2 layers, for CPU)")
    ap.add_argument("--device", default="cuda" if cuda else "cpu", help="cuda or cpu")
    ap.add_argument("--requests", type=int, default=256, help="requests in the workload (256)")
    ap.add_argument("--min-len", type=int, default=100, help="shortest prompt and output (100)")
    ap.add_argument("--max-len", type=int, default=1024, help="longest prompt and output (1024)")
    ap.add_argument("--max-num-seqs", type=int, default=256, help="engine: sequences running at once")
    ap.add_argument("--budget", type=int, default=2048, help="engine: token budget per step (2048)")
    ap.add_argument("--kv-blocks", type=int, default=0, help="engine: pool size (default: all requests fit)")
    ap.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                    help="engine: eager decode steps")
    ap.add_argument("--overlap", choices=["auto", "on", "off"], default="auto",
                    help="engine: overlap scheduling (auto: on for CUDA)")
    ap.add_argument("--report-blocks", action="store_true",
                    help="engine: per-block reports every step (what the inspector needs)")
    ap.add_argument("--engine-process", action="store_true",
                    help="server: the engine in a process of its own (playground serve --engine-process)")
    ap.add_argument("--concurrency", type=int, default=0, help="streams open at once (default: all)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (default: torch's)")
    ap.add_argument("--seed", type=int, default=0, help="workload and weights seed")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per side, alternating in-process and server, each its own workload; "
                         "the best run of each side is the headline (a shared CPU is noisy)")
    ap.add_argument("--start-timeout", type=float, default=300.0, help="seconds for the server to start")
    ap.add_argument("--json", default=str(RESULTS_DIR),
                    help="a file, or a folder for serve_load-<device>.json (default benchmarks/results/)")
    ap.add_argument("--role", choices=["bench", "server"], default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    for name in ("requests", "min_len", "max_len", "max_num_seqs", "budget", "repeats"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.min_len > a.max_len:
        ap.error(f"--min-len ({a.min_len}) must not exceed --max-len ({a.max_len})")
    if a.device.startswith("cuda") and not cuda:
        ap.error("--device cuda: no CUDA GPU here (use --device cpu --model tiny)")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.role == "server":
        return serve_forever(a)
    try:
        import fastapi, uvicorn, httpx2  # noqa: F401, E401
    except ImportError as e:
        print(f"serve_load: {e.name} is not installed (the server needs fastapi and uvicorn, the "
              "load generator httpx2)", file=sys.stderr)
        return 2
    engine, works = build_engine(a)
    vocab = engine.model_config.vocab_size
    base_runs, srv_runs = [], []
    with Server(a) as url:
        for rep, reqs in enumerate(works):
            expected = sum(o for _, o in reqs)
            base_runs.append(run_inprocess(engine, reqs, a.device, warm=rep == 0))
            srv_runs.append(run_server(url, reqs, vocab, a, warm=rep == 0))
            for row in (base_runs[-1], srv_runs[-1]):
                if row["output_tokens"] != expected:
                    raise RuntimeError(f"{row['runtime']}: {row['output_tokens']} tokens, expected {expected}")
            print(f"run {rep + 1}/{a.repeats}: in-process {base_runs[-1]['output_tok_s']:.1f} tok/s, "
                  f"server {srv_runs[-1]['output_tok_s']:.1f} tok/s", flush=True)
    base = max(base_runs, key=lambda r: r["output_tok_s"])
    srv = max(srv_runs, key=lambda r: r["output_tok_s"])
    same_run = [s["output_tok_s"] / b["output_tok_s"] for b, s in zip(base_runs, srv_runs)]
    ratio = srv["output_tok_s"] / base["output_tok_s"]
    rows = [base, srv]
    print_table(rows, ["runtime", "output_tok_s", "seconds", "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms",
                       "itl_p50_ms", "itl_p90_ms", "itl_p99_ms"])
    print(f"throughput ratio (server / in-process, best of {a.repeats} each): {ratio:.3f} "
          f"(target >= 0.9); per run: {', '.join(f'{x:.3f}' for x in same_run)}")
    out = write_json(a.json, "serve_load", rows, {
        "config": {k: v for k, v in vars(a).items() if k not in ("json", "role", "port")},
        "runs": {"in_process": base_runs, "server": srv_runs},
        "summary": {"throughput_ratio": ratio, "ratio_per_run": same_run, "target": 0.9,
                    "target_met": ratio >= 0.9}})
    if out:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
