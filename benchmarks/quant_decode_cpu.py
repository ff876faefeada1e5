"""quant_decode.py's CPU form: our engine per weight format, transformers and llama.cpp, one run.

The default model (or --model PATH), --threads threads (default 2), batch 1, --new-tokens greedy
tokens after a short prompt:
    ours         through the real Engine, for the CPU default (--weights left out: what a user
                 gets), then --weights int8, native, int4 and float32 (the exact mode)
    transformers float32 eager on the same GGUF (dequantised by transformers), in this process
                 (--no-transformers skips it; the row then says so)
    llama.cpp    on the same GGUF and the same prompt ids, in a subprocess of whatever Python
                 --llama-cpp-python / $LLAMA_CPP_PYTHON names (else this one), through
                 llama-cpp-python (`import llama_cpp`) or llama-cpp-py-sync (`import
                 llama_cpp_py_sync`, prebuilt wheels on PyPI), whichever imports; else its row
                 says why it is missing.
Every system is loaded once, then --rounds rounds (default 3) run each in turn; a row keeps its
best round, the 1-minute load average after it (`load`) and every round's rate and load. The CPU
is shared with other jobs: compare ratios within one run (x_llama_cpp, x_transformers), not
figures across runs. A failing row records its error; the others still run. Not a correctness check.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

PROMPT = "The history of the printing press begins in the fifteenth century, when"
# (label, --weights, --dtype): None = the loader's CPU default
OURS = (("default", None, None), ("int8", "int8", None), ("native", "native", None),
        ("int4", "int4", None), ("float", "float", "float32"))

LLAMA_CPP_SCRIPT = r"""
import json, sys, time
import llama_cpp
path, ids, new, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads,
                      n_ctx=len(ids) + new + 16, verbose=False)
llm.eval(ids[:4])                                   # warm-up
llm.reset()
llm.eval(ids)
out = []
t0 = time.perf_counter()
for _ in range(new):
    tok = llm.sample(temp=0.0)
    out.append(int(tok))
    llm.eval([tok])
print("RESULT", json.dumps({"decode_tok_s": new / (time.perf_counter() - t0), "ids": out,
                            "version": "llama-cpp-python " + getattr(llama_cpp, "__version__", "?")}))
"""

# llama-cpp-py-sync: the same loop through its C API (greedy sampler, one token per decode)
LLAMA_CPP_PY_SYNC_SCRIPT = r"""
import json, sys, time
import llama_cpp_py_sync as lcs
path, ids, new, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = lcs.Llama(path, n_ctx=len(ids) + new + 16, n_threads=threads, n_threads_batch=threads,
                verbose=False)
greedy = llm._lib.llama_sampler_init_greedy()
llm._eval_tokens(ids[:4], 0)                        # warm-up
llm._clear_context_state()
n = llm._eval_tokens(ids, 0)
out = []
t0 = time.perf_counter()
for _ in range(new):
    tok = int(llm._lib.llama_sampler_sample(greedy, llm._ctx, -1))
    out.append(tok)
    n = llm._eval_tokens([tok], n)
print("RESULT", json.dumps({"decode_tok_s": new / (time.perf_counter() - t0), "ids": out,
                            "version": f"llama-cpp-py-sync {lcs.__version__} ({lcs.__llama_cpp_tag__})"}))
"""
SCRIPTS = {"llama_cpp": LLAMA_CPP_SCRIPT, "llama_cpp_py_sync": LLAMA_CPP_PY_SYNC_SCRIPT}


def load_1min() -> float:
    """The 1-minute load average (0.0 where /proc/loadavg is missing)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def engine_decode(loaded, prompt_ids: list[int], new: int) -> dict:
    """Decode tok/s of `new` greedy tokens through the Engine (step times of decode steps), and
    the tokens."""
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.engine.sampling_params import SamplingParams
    e = Engine(loaded, EngineConfig(num_blocks=-(-(len(prompt_ids) + new + 8) // 16) + 8,
                                    enable_prefix_caching=False))
    e.generate(prompt_ids[:4], SamplingParams(max_tokens=4, ignore_eos=True))     # warm-up
    rid = e.add_request(prompt_ids, SamplingParams(max_tokens=new, ignore_eos=True))
    dec_tok = dec_s = 0.0
    ids: list[int] = []
    while e.has_unfinished():
        r = e.step()
        ids += [t for o in r.outputs if o.request_id == rid for t in o.new_token_ids]
        if not r.num_prefill_tokens:
            dec_tok, dec_s = dec_tok + r.num_decode_tokens, dec_s + r.step_time_s
    return {"decode_tok_s": dec_tok / dec_s, "ids": ids}


def transformers_runner(gguf: Path, prompt_ids: list[int], new: int):
    """transformers float32 eager loaded once from the same GGUF -> run() giving decode tok/s of
    `new` greedy tokens (generate's time less one prefill, over new - 1 tokens), the tokens."""
    import transformers
    m = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
        attn_implementation="eager").eval()
    x = torch.tensor([prompt_ids])

    def run() -> dict:
        with torch.inference_mode():
            m(x[:, :8])                                               # warm-up
            t = time.perf_counter()
            m(x, use_cache=True)
            pre = time.perf_counter() - t
            t = time.perf_counter()
            out = m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False)
            total = time.perf_counter() - t
        return {"decode_tok_s": (new - 1) / max(total - pre, 1e-9),
                "ids": out[0, len(prompt_ids):].tolist(),
                "version": "transformers " + transformers.__version__}
    return run


def llama_cpp_python(choice: str | None) -> tuple[str | None, str, str]:
    """(interpreter, module it imports: llama_cpp or llama_cpp_py_sync, why not when None)."""
    python = choice or os.environ.get("LLAMA_CPP_PYTHON") or sys.executable
    last = "?"
    for module in SCRIPTS:
        try:
            probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                                   text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:      # no such interpreter
            last = str(e)
            break
        if probe.returncode == 0:
            return python, module, ""
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
    return None, "", (f"skipped: neither llama_cpp nor llama_cpp_py_sync imports in {python} "
                      f"({last}); install llama-cpp-python (built from source) or "
                      f"llama-cpp-py-sync in a venv and pass --llama-cpp-python or LLAMA_CPP_PYTHON")


def llama_cpp_decode(python: str, module: str, path: Path, prompt_ids: list[int], new: int,
                     threads: int) -> dict:
    """llama.cpp through `module` in interpreter `python`, same GGUF, same prompt ids."""
    run = subprocess.run([python, "-c", SCRIPTS[module], str(path), json.dumps(prompt_ids),
                          str(new), str(threads)], capture_output=True, text=True, timeout=600)
    if run.returncode != 0 or "RESULT" not in run.stdout:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"llama.cpp run failed ({python}): {last}")
    return json.loads(run.stdout.split("RESULT", 1)[1])


def agreeing_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two greedy runs share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def run_cpu(a) -> list[dict]:
    """All rows of the CPU form (module docstring): every system loaded once, then --rounds
    rounds, each running every system in turn (so a burst of load from other jobs hits them
    alike); a row's decode_tok_s is its best round (`rounds`: all, `loads`: the load after
    each), and x_llama_cpp / x_transformers divide best by best."""
    from llm_playground.model.weights.loader import load_model
    torch.set_num_threads(a.threads)
    rows, runners, path, prompt_ids = [], [], None, []
    for label, weights, dtype in OURS:
        try:
            loaded = load_model(a.model, dtype=dtype, weights=weights, device="cpu")
            path = loaded.path
            prompt_ids = loaded.tokenizer.encode_ordinary(PROMPT)
            rows.append({"system": f"ours {loaded.weights}" + (" (CPU default)" if weights is None else ""),
                         "weights": label, "dtype": str(loaded.dtype).removeprefix("torch.")})
            runners.append((rows[-1], lambda m=loaded: engine_decode(m, prompt_ids, a.new_tokens)))
        except Exception as e:
            traceback.print_exc()
            rows.append({"system": f"ours --weights {label}", "weights": label,
                         "error": f"{type(e).__name__}: {e}"[:200]})
    if not a.transformers:
        rows.append({"system": "transformers float32", "error": "skipped: --no-transformers"})
    else:
        try:
            rows.append({"system": "transformers float32 eager (same GGUF)"})
            runners.append((rows[-1], transformers_runner(path, prompt_ids, a.new_tokens)))
        except Exception as e:
            rows[-1] = {"system": "transformers float32", "error": f"{type(e).__name__}: {e}"[:300]}
    python, module, why = llama_cpp_python(a.llama_cpp_python)
    if python is None:
        rows.append({"system": "llama.cpp", "error": why})
    else:
        rows.append({"system": "llama.cpp (same GGUF)"})
        runners.append((rows[-1], lambda: llama_cpp_decode(python, module, path, prompt_ids,
                                                           a.new_tokens, a.threads)))
    for _ in range(a.rounds):
        for row, run in runners:
            if "error" in row:
                continue
            try:
                r = run()
            except Exception as e:
                traceback.print_exc()
                row["error"] = f"{type(e).__name__}: {e}"[:300]
                continue
            row.setdefault("rounds", []).append(r["decode_tok_s"])
            row.setdefault("loads", []).append(load_1min())
            row.setdefault("ids", r["ids"])
            if "version" in r:
                row["version"] = r["version"]
            print(row["system"], f"{r['decode_tok_s']:.1f} tok/s, load {row['loads'][-1]}", flush=True)
    for row in rows:
        if row.get("rounds"):
            best = max(range(len(row["rounds"])), key=row["rounds"].__getitem__)
            row["decode_tok_s"], row["load"] = row["rounds"][best], row["loads"][best]
    exact = next((r.get("ids") for r in rows if r.get("weights") == "float"), None)
    refs = {key: next((r["decode_tok_s"] for r in rows if r["system"].startswith(prefix)
                       and "decode_tok_s" in r), None)
            for key, prefix in (("x_llama_cpp", "llama.cpp"), ("x_transformers", "transformers"))}
    for r in rows:
        for key, ref in refs.items():
            if ref and "decode_tok_s" in r:
                r[key] = r["decode_tok_s"] / ref
        if exact is not None and "ids" in r:
            r["agree_float32"] = agreeing_prefix(r["ids"], exact)
    return rows
