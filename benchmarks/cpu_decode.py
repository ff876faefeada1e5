"""CPU decode and prefill speed of our engine vs transformers on the default model, same run.

Batch 1: a ~100-token English prompt, 128 new tokens, greedy, N threads (default 2). Ours runs in
the default CPU mode (whatever model/weights/loader.py picks: int8 weights) and in float32 (the exact
mode); transformers runs float32 eager, loaded from the same GGUF (dequantized by transformers).
prefill tok/s = prompt tokens / time of the step that computes the prompt; decode tok/s = tokens
after the first / their time. Ours also runs 8 requests at once (different prompts) and reports
the aggregate decode throughput. llama.cpp (147 tok/s decode, 280 tok/s prefill, 2 threads, same
GGUF, measured 2026-11-23, docs FIELD-NOTES) is quoted as an external figure, not rerun here.
Greedy agreement: how many of the first new tokens ours float32 shares with transformers.

  python benchmarks/cpu_decode.py                     # full run (loads the model 3 times)
  python benchmarks/cpu_decode.py --new-tokens 16 --skip-hf --model tiny   # seconds, to validate
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402
from benchmarks.engine_models import load  # noqa: E402

PROMPT = ("The history of the printing press begins in the fifteenth century, when Johannes "
          "Gutenberg combined movable metal type, oil-based ink and a wooden press adapted from "
          "those used to make wine. Within a few decades printing shops had opened in most large "
          "European cities, books became cheaper, and ideas travelled faster than ever before. "
          "Historians still argue about how much this changed the way people read, wrote and "
          "thought, but few doubt that the cost of copying a text fell by orders of magnitude, and "
          "that this shaped science, religion and politics for the next five hundred years.")
LLAMA_CPP = {"decode_tok_s": 147.0, "prefill_tok_s": 280.0}


def ours(loaded, prompt_ids: list[int], new: int, batch: int) -> dict:
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.sampling_params import SamplingParams
    e = Engine(loaded, EngineConfig(num_blocks=-(-(len(prompt_ids) + new + 8) // 16) * batch + 8,
                                    max_num_batched_tokens=4096, enable_prefix_caching=False))
    params = SamplingParams(max_tokens=new, ignore_eos=True)
    e.generate(prompt_ids[:8], SamplingParams(max_tokens=2, ignore_eos=True))   # warm-up
    for i in range(batch):
        e.add_request([(t + i) % loaded.config.vocab_size for t in prompt_ids] if i else prompt_ids, params)
    pre_tok = pre_s = dec_tok = dec_s = 0.0
    ids: list[int] = []
    while e.has_unfinished():
        r = e.step()
        if r.num_prefill_tokens:
            pre_tok, pre_s = pre_tok + r.num_prefill_tokens, pre_s + r.step_time_s
        else:
            dec_tok, dec_s = dec_tok + r.num_decode_tokens, dec_s + r.step_time_s
        ids += [t for o in r.outputs if o.request_id == 1 for t in o.new_token_ids]
    return {"prefill_tok_s": pre_tok / pre_s, "decode_tok_s": dec_tok / dec_s, "ids": ids}


def transformers_run(gguf: Path, prompt_ids: list[int], new: int) -> dict:
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                             dtype=torch.float32, attn_implementation="eager").eval()
    x = torch.tensor([prompt_ids])
    with torch.inference_mode():
        m(x[:, :8])                                                   # warm-up
        t = time.perf_counter()
        m(x, use_cache=True)
        pre = time.perf_counter() - t
        t = time.perf_counter()
        out = m.generate(x, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        total = time.perf_counter() - t
    return {"prefill_tok_s": len(prompt_ids) / pre, "decode_tok_s": (new - 1) / max(total - pre, 1e-9),
            "ids": out[0, len(prompt_ids):].tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="default | tiny | PATH to a .gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--skip-hf", action="store_true", help="do not run transformers")
    ap.add_argument("--json", default=str(RESULTS_DIR),
                    help="a file, or a folder for cpu_decode-<device>.json (default: benchmarks/results/)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    spec = None if a.model == "default" else a.model
    rows, ids = [], {}
    for dtype in (None, "float32"):
        loaded = load(spec, dtype)
        prompt_ids = loaded.tokenizer.encode_ordinary(PROMPT)
        one = ours(loaded, prompt_ids, a.new_tokens, 1)
        many = ours(loaded, prompt_ids, a.new_tokens, a.batch)
        label = f"ours {'default: ' if dtype is None else ''}{loaded.weight_format or dtype}"
        ids["ours " + (dtype or "default")] = one.pop("ids")
        rows.append({"system": label, "batch": 1, **one})
        rows.append({"system": label, "batch": a.batch, "prefill_tok_s": many["prefill_tok_s"],
                     "decode_tok_s": many["decode_tok_s"]})
        path = loaded.path
        del loaded
    if not a.skip_hf and a.model != "tiny":
        hf = transformers_run(Path(path), prompt_ids, a.new_tokens)
        ids["transformers float32"] = hf.pop("ids")
        rows.append({"system": "transformers float32 eager", "batch": 1, **hf})
        base = hf["decode_tok_s"]
        for r in rows:
            r["decode_vs_hf"] = r["decode_tok_s"] / base
    rows.append({"system": "llama.cpp (external, FIELD-NOTES)", "batch": 1, **LLAMA_CPP})
    agree = None
    if "transformers float32" in ids:
        a32, b = ids["ours float32"], ids["transformers float32"]
        agree = next((i for i, (x, y) in enumerate(zip(a32, b)) if x != y), min(len(a32), len(b)))
        print(f"greedy agreement ours float32 vs transformers: first {agree} tokens identical")
    print(f"prompt {len(prompt_ids)} tokens, {a.new_tokens} new, {a.threads} threads")
    print_table(rows, ["system", "batch", "prefill_tok_s", "decode_tok_s", "decode_vs_hf"])
    write_json(a.json, "cpu_decode", rows, {"threads": a.threads, "prompt_tokens": len(prompt_ids),
                                            "new_tokens": a.new_tokens, "greedy_agreement": agree})


if __name__ == "__main__":
    main()
