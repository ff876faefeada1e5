"""Oracle: our Llama forward through the paged KV cache equals transformers' LlamaForCausalLM.

Tiny random models (MHA, GQA, MQA; tied and untied head; with and without Llama-3 rope scaling)
are saved as config.json + safetensors, read back by OUR loader_hf, and compared in float32:
logits of the prefill and of 16 greedy decode steps (through scattered blocks of size 4), and a
mixed batch of sequences with different lengths, prefill and decode in one forward.
"""
from __future__ import annotations

import pytest
import torch

from llm_playground.model.weights import hf_folder
from llm_playground.model.weights.loader import build_model
from paged_helpers import Pager
from tiny_models import random_hf_model

import transformers

CONFIGS = {
    "mha-untied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
    "gqa-tied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "mqa-untied-llama3": dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False,
                              rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 32}),
    "gqa-tied-llama3-theta": dict(num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
                                  rope_theta=500000.0,
                                  rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 2.0,
                                                "original_max_position_embeddings": 16}),
}
TOL = 1e-4


def make_hf_model(tmp_path, seed: int, **overrides):
    hf = random_hf_model(seed, **overrides)
    hf.save_pretrained(tmp_path)
    ours_cfg = hf_folder.read_hf_config(tmp_path)
    _, get = hf_folder.open_hf_weights(tmp_path, ours_cfg)
    ours = build_model(ours_cfg, get, "float32", torch.float32, torch.device("cpu"))
    return hf, ours, ours_cfg


@torch.no_grad()
def hf_logits(hf, ids: list[int]) -> torch.Tensor:
    return hf(torch.tensor([ids])).logits[0].float()   # (T, V)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_prefill_and_decode_match(tmp_path, name):
    hf, ours, cfg = make_hf_model(tmp_path, seed=len(name), **CONFIGS[name])
    pager = Pager(cfg, num_blocks=40, block_size=4, seed=1)
    ids = torch.randint(0, cfg.vocab_size, (11,), generator=torch.Generator().manual_seed(3)).tolist()
    hidden = ours.forward(torch.tensor(ids), pager.batch([(0, len(ids))]), pager.kv)
    logits = ours.compute_logits(hidden)                                      # (T, V)
    ref = hf_logits(hf, ids)
    assert (logits - ref).abs().max().item() < TOL
    for step in range(16):
        nxt = int(logits[-1].argmax())
        ids.append(nxt)
        hidden = ours.forward(torch.tensor([nxt]), pager.batch([(0, 1)]), pager.kv)
        logits = ours.compute_logits(hidden)                                  # (1, V)
        ref_last = hf_logits(hf, ids)[-1]
        err = (logits[0] - ref_last).abs().max().item()
        assert err < TOL, f"decode step {step}: max abs error {err}"


def test_mixed_batch_of_prefills_and_decodes(tmp_path):
    hf, ours, cfg = make_hf_model(tmp_path, seed=7, **CONFIGS["gqa-tied"])
    pager = Pager(cfg, num_blocks=60, block_size=4, seed=5)
    gen = torch.Generator().manual_seed(11)
    tokens = {sid: torch.randint(0, cfg.vocab_size, (n,), generator=gen).tolist()
              for sid, n in ((0, 13), (1, 9), (2, 15))}
    schedule = [
        [(0, 9)],                      # prefill of sequence 0 alone
        [(1, 3)],                      # first chunk of sequence 1
        [(0, 1), (1, 3), (2, 7)],      # decode, second chunk, first chunk of a new sequence
        [(0, 1), (1, 1), (2, 6)],      # decodes first, then the rest of sequence 2
        [(0, 1), (1, 1), (2, 1)],      # decodes only
        [(0, 1), (1, 1), (2, 1)],
    ]
    for n, steps in enumerate(schedule):
        starts = {sid: pager.lens.get(sid, 0) for sid, _ in steps}
        batch = pager.batch(steps)
        ids = torch.tensor([t for sid, q in steps for t in tokens[sid][starts[sid]:starts[sid] + q]])
        logits = ours.compute_logits(ours.forward(ids, batch, pager.kv))      # (T, V)
        offset = 0
        for sid, q_len in steps:
            ref = hf_logits(hf, tokens[sid][:pager.lens[sid]])[-q_len:]     # (q_len, V)
            err = (logits[offset:offset + q_len] - ref).abs().max().item()
            assert err < TOL, f"step {n}, sequence {sid}: max abs error {err}"
            offset += q_len
        assert offset == batch.num_tokens


def test_attention_probs_match_transformers(tmp_path):
    hf, ours, cfg = make_hf_model(tmp_path, seed=2, **CONFIGS["gqa-tied"])
    ids = list(range(5, 17))
    hf.config._attn_implementation = "eager"
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_attentions=True)
    for layer, head in ((0, 0), (2, 3), (1, 1)):
        ours_p = ours.attention_probs(ids, layer, head)
        ref = out.attentions[layer][0, head].float()
        assert (ours_p - ref).abs().max().item() < 1e-5
