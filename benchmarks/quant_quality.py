"""Quality of quantised weights (and KV) on the default model: logits error, greedy agreement,
perplexity, each row named for what it stores. CPU, float32 oracle.

Rows (the WAVE2 note's naming): the reference is the default model's Q4_1 weights dequantised to
float32 (`--dtype float32`); then the weights as stored in the file (`--weights native`: Q4_1
blocks, the Q8_0 head requantised per channel on the CPU), int8 per channel and int4 (groups 64
and 32, min/scale) quantised at load from the dequantised weights, all with bfloat16 compute,
and the reference weights with an int8 KV cache. (int4 of an already-4-bit file is a second
rounding; `--weights int4` keeps the output head at int8 per channel, as llama.cpp's Q4 types
keep theirs at 6-8 bits.)

- logits error: the quantised model against the float32 model holding *the same quantised
  weights dequantised* (each QuantLinear's packed weight -> float32), over every position of the
  text: max and mean absolute error (what the quantised arithmetic and bfloat16 compute add,
  not what quantising the weights costs).
- greedy agreement: 64 greedy tokens after a fixed prompt, against the reference model's; the
  length of the agreeing prefix (exactness is not expected; the figure is).
- perplexity: exp(mean NLL) of every next token of benchmarks/texts/python_execmodel.txt (PSF
  licence, see benchmarks/texts/README.md) in one forward over the paged cache.

    python benchmarks/quant_quality.py [--json PATH] [--threads 2] [--new-tokens 64]
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "model"))

from benchmarks.bench_common import RESULTS_DIR, print_table, write_json  # noqa: E402

TEXT = ROOT / "benchmarks" / "texts" / "python_execmodel.txt"
TEXT_SHA256 = "607922e2f0b29a54ba29f506445adcfcb26d74506d169b8a5db28fe8752d293b"
PROMPT = "Explain in a few sentences why the sky is blue."
VARIANTS = [  # (row name, load_model kwargs)
    ("Q4_1 dequantised, float32 (reference)", dict(dtype="float32")),
    ("Q4_1 as stored (native), bf16 compute", dict(weights="native")),
    ("int8 weights (per channel), bf16 compute", dict(weights="int8")),
    ("int4 weights (g64, min/scale), bf16 compute", dict(weights="int4", group_size=64)),
    ("int4 weights (g32, min/scale), bf16 compute", dict(weights="int4", group_size=32)),
]


def forward_logits(loaded, ids: list[int], kv_dtype=None) -> torch.Tensor:
    """(T, V) float32 logits of every position, one prefill over a fresh paged cache."""
    from paged_helpers import Pager
    pager = Pager(loaded.config, num_blocks=-(-len(ids) // 16) + 1, block_size=16,
                  dtype=loaded.dtype, seed=0)
    if kv_dtype is not None:
        pager.kv = type(pager.kv)(loaded.config.num_layers, pager.kv.num_blocks, 16,
                                  loaded.config.num_kv_heads, loaded.config.head_dim,
                                  loaded.dtype, "cpu", kv_dtype=kv_dtype)
    hidden = loaded.model.forward(torch.tensor(ids), pager.batch([(0, len(ids))]), pager.kv)
    return loaded.model.compute_logits(hidden)


def perplexity(logits: torch.Tensor, ids: list[int]) -> float:
    nll = torch.nn.functional.cross_entropy(logits[:-1].double(), torch.tensor(ids[1:]))
    return math.exp(nll.item())


def dequantised_twin(loaded):
    """A float32 copy of `loaded` whose projections hold its quantised weights, dequantised."""
    from llm_playground.model.network.quant_linear import QuantLinear
    from llm_playground.model.weights.loader import load_model
    twin = load_model(loaded.path, dtype="float32", device="cpu")
    with torch.no_grad():
        for mine, theirs in zip(loaded.model.modules(), twin.model.modules()):
            if isinstance(mine, QuantLinear):
                if theirs.weight.data_ptr() == twin.model.embed_tokens.data_ptr():  # tied head
                    from llm_playground.model.network.linear import Linear
                    twin.model.lm_head = theirs = Linear(theirs.weight.detach().clone())
                theirs.weight.copy_(mine.packed.dequantize())
    return twin


def greedy(loaded, prompt: list[int], new: int, kv_dtype=None) -> list[int]:
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.engine.sampling_params import SamplingParams
    fields = dict(num_blocks=-(-(len(prompt) + new) // 16) + 4, enable_prefix_caching=False)
    if kv_dtype is not None:
        fields["kv_dtype"] = kv_dtype
    e = Engine(loaded, EngineConfig(**fields))
    return e.generate(prompt, SamplingParams(max_tokens=new, ignore_eos=True))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--model", default=None, help="a GGUF (default: the default model)")
    ap.add_argument("--json", default=str(RESULTS_DIR))
    ap.add_argument("--only", default=None, help="run the reference and the rows containing this")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from llm_playground.model.network.kv_cache import KV_DTYPES
    from llm_playground.model.weights.loader import load_model
    data = TEXT.read_bytes()
    if hashlib.sha256(data).hexdigest() != TEXT_SHA256:
        raise SystemExit(f"{TEXT}: SHA-256 differs from the pinned text")
    rows, ref = [], None
    variants = list(VARIANTS) + [("int8 KV (per token), float32 weights", dict(dtype="float32"))
                                 ] if "int8" in KV_DTYPES else list(VARIANTS)
    if a.only:
        variants = variants[:1] + [v for v in variants[1:] if a.only in v[0]]
    for name, kw in variants:
        t0 = time.perf_counter()
        kv = "int8" if "KV" in name else None
        loaded = load_model(a.model, device="cpu", **kw)
        text_ids = loaded.tokenizer.encode_ordinary(data.decode("utf-8"))
        prompt = loaded.tokenizer.encode_ordinary(PROMPT)
        logits = forward_logits(loaded, text_ids, kv)
        toks = greedy(loaded, prompt, a.new_tokens, kv)
        row = {"variant": name, "stored": loaded.weights + (" + int8 KV" if kv else ""),
               "perplexity": perplexity(logits, text_ids)}
        if ref is None:
            ref = {"toks": toks}
        agree = next((i for i, (x, y) in enumerate(zip(toks, ref["toks"])) if x != y), len(toks))
        row["greedy_agree"] = agree
        if kw.get("weights"):
            twin = dequantised_twin(loaded)
            err = (logits - forward_logits(twin, text_ids)).abs()
            row.update(logits_max_err=err.max().item(), logits_mean_err=err.mean().item(),
                       logits_scale=logits.abs().max().item())
            del twin
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(row, flush=True)
        del loaded
    print(f"text {TEXT.name}: {len(text_ids)} tokens; greedy: {a.new_tokens} tokens after "
          f"{PROMPT!r}; {a.threads} threads")
    print_table(rows, ["variant", "perplexity", "greedy_agree", "logits_max_err", "logits_mean_err"])
    write_json(a.json, "quant_quality", rows, {"text": TEXT.name, "text_tokens": len(text_ids),
                                              "new_tokens": a.new_tokens, "prompt": PROMPT})
    return 0


if __name__ == "__main__":
    sys.exit(main())
