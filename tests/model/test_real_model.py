"""Oracle: the real default model (SmolLM2-135M-Instruct GGUF) against transformers, float32 CPU.

Our tokenizer (bpe, from the GGUF metadata) must give transformers' GGUF tokenizer's prompt ids,
and a minimal greedy loop through our forward and a paged KV cache (scattered blocks) must give
exactly the tokens of transformers' greedy `generate` for 64 new tokens, on an English, a Chinese
(through the chat template) and a code prompt.
"""
from __future__ import annotations

import pytest
import torch

from llm_playground.model.engine.chat_template import render_chat
from llm_playground.model.weights.default_model import ensure_default_model
from llm_playground.model.weights.loader import load_model
from paged_helpers import Pager

import transformers
pytestmark = [pytest.mark.slow, pytest.mark.network]

NEW_TOKENS = 64


@pytest.fixture(scope="module")
def models():
    path = ensure_default_model()
    ours = load_model(path, dtype="float32", device="cpu")
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    return ours, tok, hf


def prompts(ours) -> dict[str, str]:
    chat = render_chat(ours.chat_template, [{"role": "user", "content": "用一句话介绍长城。"}])
    return {
        "english": "The three most important inventions of the nineteenth century were",
        "chinese-chat": chat,
        "code": "def fibonacci(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    }


def greedy(ours, prompt_ids: list[int], n: int) -> list[int]:
    cfg = ours.config
    pager = Pager(cfg, num_blocks=64, block_size=16, seed=3)
    model = ours.model
    hidden = model.forward(torch.tensor(prompt_ids), pager.batch([(0, len(prompt_ids))]), pager.kv)
    out: list[int] = []
    while True:
        nxt = int(model.compute_logits(hidden[-1:])[0].argmax())
        out.append(nxt)
        if len(out) == n or nxt in cfg.eos_token_ids:
            return out
        hidden = model.forward(torch.tensor([nxt]), pager.batch([(0, 1)]), pager.kv)


@pytest.mark.parametrize("which", ["english", "chinese-chat", "code"])
def test_prompt_ids_and_greedy_tokens_match_transformers(models, which):
    ours, tok, hf = models
    text = prompts(ours)[which]
    ids = ours.tokenizer.encode(text, allowed_special="all")
    ref_ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == ref_ids
    with torch.no_grad():
        ref = hf.generate(torch.tensor([ref_ids]), attention_mask=torch.ones(1, len(ref_ids), dtype=torch.long),
                          max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=list(ours.config.eos_token_ids),
                          pad_token_id=ours.config.eos_token_ids[0])[0, len(ref_ids):].tolist()
    mine = greedy(ours, ids, NEW_TOKENS)
    assert mine == ref, f"first difference at token {next(i for i, (a, b) in enumerate(zip(mine + [-1], ref + [-1])) if a != b)}"


@pytest.mark.parametrize("fmt", ["bfloat16", "int8"])
def test_fast_cpu_modes_stay_close_to_float32(models, fmt):
    """The lossy CPU modes (int8 is the CPU default) against the exact float32 path, per position."""
    ours, _, _ = models
    fast = load_model(ours.path, dtype=fmt, device="cpu")
    ids = ours.tokenizer.encode(" ".join(prompts(ours)[k] for k in ("english", "code")), allowed_special="all")
    logits = {}
    for name, loaded in (("exact", ours), ("fast", fast)):
        pager = Pager(loaded.config, num_blocks=16, block_size=16, dtype=loaded.dtype, seed=1)
        hidden = loaded.model.forward(torch.tensor(ids), pager.batch([(0, len(ids))]), pager.kv)
        logits[name] = loaded.model.compute_logits(hidden)                    # (T, V)
    agree = (logits["fast"].argmax(-1) == logits["exact"].argmax(-1)).float().mean().item()
    cos = torch.nn.functional.cosine_similarity(logits["fast"], logits["exact"], dim=-1)   # (T,)
    assert agree >= 0.9 and cos.mean() > 0.995 and cos.min() > 0.97, \
        f"{fmt}: top-1 agreement {agree:.3f}, cosine mean {cos.mean():.4f} min {cos.min():.4f}"
