"""Decode speed in the playground app (in a real terminal and headless) vs `playground generate`.

The same prompt and sampling settings run three ways, in turn, for several rounds:
- `ui-tmux`: the app in a real terminal (tmux, 140 x 45, as tests/ui/test_ui_tmux.py runs it);
  the prompt goes in with send-keys;
- `ui-headless`: the app under Textual's headless driver (App.run_test), the prompt typed in;
- `cli`: `playground generate --chat` (its own `main`), the UI's default sampling settings.
Each run is a fresh process that loads the default model. In every one, `Engine.step` is wrapped
to note when each step returned and how many tokens it gave the request: the decode rate is the
tokens after the first over the time from the first token's step to the last one's (token
timestamps; the prefill step is left out). Beside it, 1 / the median interval between tokens,
which a stall caused by other work on a shared CPU does not move (both are printed; on a quiet
machine they agree). The UI runs use the app's default settings
(temperature 0.7, top-p 0.9, top-k 40, seed 0, 256 max tokens), and `generate` is given the same,
so all three produce the same tokens (checked). Ratios compare a UI run with the `generate` run of
the same round, and the table shows their median.

This CPU may be shared with other work: the rates move with the load, so read the ratios
(measured side by side, alternating) rather than the absolute figures. On the 2-core CI-class
machine the same `generate` run moved between 28 and 43 tok/s within minutes, more than the UI's
effect. So each run also notes the CPU time of the thread that steps the engine: `engine_busy`
is that CPU over the decode's wall time. Whatever the UI takes from the engine (the GIL, a
core) shows as the engine thread not running, whatever the machine's speed, so `busy_vs_cli`
(engine_busy of a UI run over that of the round's `generate` run) is the drift-free estimate of
the speed ratio. It assumes the engine's CPU per token is the same in both, which
`engine_cpu_ms_per_token` shows.

  python benchmarks/ui_speed.py                       # 3 rounds of the three modes
  python benchmarks/ui_speed.py --rounds 1 --modes cli,ui-headless   # quick check (256 tokens each)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402

PROMPT = "Write a long story about a dragon who learns to paint."
MODES = ("ui-tmux", "ui-headless", "cli")
SIZE = (140, 45)
LOAD_TIMEOUT_S = 600
RUN_TIMEOUT_S = 600


# ---- inside each measured process ------------------------------------------------------------
class Trace:
    """Token timestamps of the one request a run makes, written to `path` when it finishes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stamps: list[tuple[float, int, float]] = []   # (step return time, new tokens, engine
        # thread CPU time then: the thread that steps the engine, its own CPU, time.thread_time)
        self.ids: list[int] = []
        self.done = False

    def install(self) -> None:
        """Wrap Engine.__init__ (notes "ready") and Engine.step (notes tokens) for this process."""
        from llm_playground.model.engine.engine import Engine
        init, step, trace = Engine.__init__, Engine.step, self

        def traced_init(engine, *args, **kwargs):
            init(engine, *args, **kwargs)
            Path(trace.path + ".ready").write_text("ready")

        def traced_step(engine):
            report = step(engine)
            now, cpu = time.perf_counter(), time.thread_time()
            for out in report.outputs:
                if out.new_token_ids:
                    trace.stamps.append((now, len(out.new_token_ids), cpu))
                    trace.ids += out.new_token_ids
                if out.finished:
                    trace.finish(str(out.finish_reason))
            return report

        Engine.__init__, Engine.step = traced_init, traced_step

    def finish(self, reason: str, **extra) -> None:
        """Write the timestamps, ids and finish reason (once)."""
        if self.done:
            return
        self.done = True
        Path(self.path).write_text(json.dumps({"stamps": self.stamps, "ids": self.ids,
                                               "finish_reason": reason, **extra}))


def ui_sampling() -> dict[str, str]:
    """The Chat tab's default sampling settings (its side panel's initial values)."""
    from llm_playground.playground.chat_view import SAMPLING_FIELDS
    return {fid: default for fid, _label, default, _kind in SAMPLING_FIELDS}


def child_cli(trace: Trace, prompt: str) -> None:
    """`playground generate --chat` with the UI's default sampling, stdout discarded."""
    from llm_playground.playground import cli
    s = ui_sampling()
    argv = ["generate", "--chat", "--prompt", prompt, "--json", "--temperature", s["temperature"],
            "--top-p", s["top_p"], "--top-k", s["top_k"], "--max-tokens", s["max_tokens"],
            "--seed", s["seed"]]
    with open(os.devnull, "w") as sink:
        out, sys.stdout = sys.stdout, sink
        try:
            code = cli.main(argv)
        finally:
            sys.stdout = out
    if code:
        raise SystemExit(f"playground generate failed (exit {code})")


def child_headless(trace: Trace, prompt: str) -> None:
    """The app under the headless driver: wait for the model, type the prompt, wait for the end."""
    from llm_playground.playground.app import PlaygroundApp
    from llm_playground.playground.engine_factory import real_factory
    from llm_playground.playground.tokenizer_sources import start_process_helpers
    start_process_helpers()
    app = PlaygroundApp(real_factory(argparse.Namespace()), model_label="the default model")

    async def run() -> float:
        async with app.run_test(size=SIZE) as pilot:
            while app.model_info is None:
                await asyncio.sleep(0.1)
            await pilot.click("#prompt")
            app.query_one("#prompt").value = prompt
            cpu0 = time.thread_time()
            await pilot.press("enter")
            while not trace.done:
                await asyncio.sleep(0.1)     # not pilot.pause: the wait itself costs no UI work
            return time.thread_time() - cpu0
    ui_cpu = asyncio.run(run())
    data = json.loads(Path(trace.path).read_text())
    data["ui_thread_cpu_s"] = ui_cpu
    Path(trace.path).write_text(json.dumps(data))


def child_app(trace: Trace) -> None:
    """The app as `playground` runs it (in the terminal tmux gives it)."""
    from llm_playground.playground.app import run_app
    run_app(argparse.Namespace())


# ---- the driver ------------------------------------------------------------------------------
def _child(mode: str, trace_path: str, prompt: str, timeout: float) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--trace", trace_path,
           "--prompt", prompt]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed: {done.stderr.strip()[-1500:]}")


def _tmux(prompt: str, trace_path: str) -> None:
    sock = f"ui-speed-{uuid.uuid4().hex[:8]}"

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", sock, *args], check=True, capture_output=True,
                              text=True).stdout

    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    env["TERM"] = "xterm-256color"
    # Textual draws on stderr: leave it on the terminal; a failure shows on the captured screen
    cmd = (f"{sys.executable} {Path(__file__).resolve()} --child app --trace {trace_path}; sleep 5")
    subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-s", "pg", "-x", str(SIZE[0]),
                    "-y", str(SIZE[1]), cmd], check=True, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while not (Path(trace_path + ".ready").exists() and " KV " in tmux("capture-pane", "-p", "-t", "pg")):
            if time.monotonic() > deadline:
                raise RuntimeError("the app did not load the model in time:\n"
                                   + tmux("capture-pane", "-p", "-t", "pg"))
            time.sleep(0.5)
        time.sleep(1.0)                         # let the reference tokenizers finish loading
        tmux("send-keys", "-t", "pg", "-l", prompt)
        tmux("send-keys", "-t", "pg", "Enter")
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not Path(trace_path).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("no answer in time:\n" + tmux("capture-pane", "-p", "-t", "pg"))
            time.sleep(0.2)
        time.sleep(0.5)
        screen = tmux("capture-pane", "-p", "-t", "pg")
        if "Traceback" in screen:
            raise RuntimeError("the app failed:\n" + screen)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def measure(mode: str, prompt: str) -> dict:
    """One run of `mode` in a fresh process: decode rate from token timestamps, and the rest."""
    with tempfile.TemporaryDirectory() as tmp:
        trace_path = str(Path(tmp) / "trace.json")
        t0 = time.perf_counter()
        if mode == "ui-tmux":
            _tmux(prompt, trace_path)
        else:
            _child("cli" if mode == "cli" else "headless", trace_path, prompt, LOAD_TIMEOUT_S + RUN_TIMEOUT_S)
        data = json.loads(Path(trace_path).read_text())
    stamps = data["stamps"]
    decode_tokens = sum(n for _, n, _ in stamps[1:])
    span = stamps[-1][0] - stamps[0][0] if len(stamps) > 1 else 0.0
    per_token = [(b[0] - a[0]) / b[1] for a, b in zip(stamps, stamps[1:]) if b[1]]
    engine_cpu = stamps[-1][2] - stamps[0][2] if len(stamps) > 1 else 0.0
    return {"mode": mode, "tokens": len(data["ids"]), "finish_reason": data["finish_reason"],
            "decode_tok_s": decode_tokens / span if span > 0 else None,
            # robust to a stall caused by other work on a shared CPU: 1 / the median token interval
            "median_interval_tok_s": 1.0 / statistics.median(per_token) if per_token else None,
            "stalls_over_250ms": sum(1 for d in per_token if d > 0.25),
            # the share of the decode time the engine's thread ran (its own CPU over the wall):
            # what the UI takes from it shows here, unmoved by the machine's speed
            "engine_busy": engine_cpu / span if span > 0 else None,
            "engine_cpu_ms_per_token": 1e3 * engine_cpu / decode_tokens if decode_tokens else None,
            "ui_thread_cpu_s": data.get("ui_thread_cpu_s"), "ids": data["ids"],
            "wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every mode, alternating (3)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--json", default=str(RESULTS_DIR),
                    help="a file, or a folder for ui_speed-<device>.json (default: benchmarks/results/)")
    ap.add_argument("--child", choices=("cli", "headless", "app"), help=argparse.SUPPRESS)
    ap.add_argument("--trace", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        trace = Trace(a.trace)
        trace.install()
        {"cli": lambda: child_cli(trace, a.prompt), "headless": lambda: child_headless(trace, a.prompt),
         "app": lambda: child_app(trace)}[a.child]()
        return
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"--modes: unknown {', '.join(bad)} (known: {', '.join(MODES)})")
    if "ui-tmux" in modes and shutil.which("tmux") is None:
        raise SystemExit("--modes ui-tmux needs the tmux binary (apt-get install -y tmux)")
    runs: list[dict] = []
    for r in range(a.rounds):
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:     # rotate the order
            run = measure(mode, a.prompt) | {"round": r}
            runs.append(run)
            print(f"round {r + 1} {mode:12s} {run['decode_tok_s'] or 0:6.1f} tok/s "
                  f"(median interval {run['median_interval_tok_s'] or 0:.1f} tok/s, "
                  f"{run['stalls_over_250ms']} stalls > 250 ms)  {run['tokens']} tokens "
                  f"({run['finish_reason']})", flush=True)
    same = len({tuple(run["ids"]) for run in runs}) == 1
    rows = []
    for mode in modes:
        mine = [x for x in runs if x["mode"] == mode and x["decode_tok_s"]]
        ratios, robust, busy = [], [], []
        for x in mine:
            base = [c for c in runs if c["mode"] == "cli" and c["round"] == x["round"] and c["decode_tok_s"]]
            if base and mode != "cli":
                ratios.append(x["decode_tok_s"] / base[0]["decode_tok_s"])
                robust.append(x["median_interval_tok_s"] / base[0]["median_interval_tok_s"])
                busy.append(x["engine_busy"] / base[0]["engine_busy"])
        cpu = [x["ui_thread_cpu_s"] for x in mine if x["ui_thread_cpu_s"] is not None]
        rates = [x["decode_tok_s"] for x in mine]
        rows.append({"mode": mode, "runs": len(mine),
                     "decode_tok_s_median": statistics.median(rates) if rates else None,
                     "min": min(rates, default=None), "max": max(rates, default=None),
                     "vs_cli_median": statistics.median(ratios) if ratios else None,
                     "vs_cli_per_round": [round(v, 3) for v in ratios],
                     "median_interval_tok_s": statistics.median(x["median_interval_tok_s"] for x in mine) if mine else None,
                     "interval_vs_cli_median": statistics.median(robust) if robust else None,
                     "engine_busy_median": statistics.median(x["engine_busy"] for x in mine) if mine else None,
                     "busy_vs_cli_median": statistics.median(busy) if busy else None,
                     "engine_cpu_ms_per_token": statistics.median(x["engine_cpu_ms_per_token"] for x in mine) if mine else None,
                     "ui_thread_cpu_s": statistics.median(cpu) if cpu else None})
    print()
    print_table(rows, ["mode", "runs", "decode_tok_s_median", "min", "max", "vs_cli_median",
                       "median_interval_tok_s", "interval_vs_cli_median", "engine_busy_median",
                       "busy_vs_cli_median", "engine_cpu_ms_per_token", "ui_thread_cpu_s"])
    print(f"\nsame tokens in every run: {'yes' if same else 'NO'} ({runs[0]['tokens']} tokens)")
    print(f"CPU: {os.cpu_count()} cores; if other work shares them, the rates move with it - "
          "compare the ratios, measured side by side.")
    for run in runs:
        run.pop("ids")
    out = write_json(a.json, "ui_speed", rows, {"prompt": a.prompt, "sampling": ui_sampling(),
                                                "rounds": a.rounds, "same_tokens": same, "runs": runs})
    if out:
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
