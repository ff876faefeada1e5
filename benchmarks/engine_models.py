"""Models for the engine benchmarks: the real default model (or --model PATH) or a tiny random
Llama ("tiny") for validating a benchmark at small scale in seconds.

The tiny model has the default model's head layout (9 query / 3 KV heads, head dim 64) but two
layers and hidden 576, random float32 weights and a byte tokenizer; its figures measure the
engine's bookkeeping, not model quality. Nothing here is used by the product.
"""
from __future__ import annotations

from pathlib import Path

import torch


def load(spec: str | None, dtype: str | None = None, device: str = "cpu"):
    """'tiny' -> random tiny LoadedModel; None -> the default model; else a path."""
    if spec != "tiny":
        from llm_playground.model.weights.loader import load_model
        return load_model(spec, dtype, device)
    from llm_playground import bpe
    from llm_playground.model.network.config import ModelConfig
    from llm_playground.model.network.llama import LlamaForCausalLM
    from llm_playground.model.weights.loader import LoadedModel
    from llm_playground.model.network.weight_contract import expected_shapes
    cfg = ModelConfig(vocab_size=256, hidden_size=576, intermediate_size=1536, num_layers=2,
                      num_heads=9, num_kv_heads=3, head_dim=64, max_position=8192,
                      rope_theta=100000.0, tie_word_embeddings=True, eos_token_ids=())
    g = torch.Generator().manual_seed(0)
    weights = {n: (torch.ones(s) if "norm" in n else torch.randn(s, generator=g) * 0.05)
               for n, s in expected_shapes(cfg).items()}
    model = LlamaForCausalLM(cfg, torch.float32, device)
    model.load_weights(lambda n: weights[n])
    tok = bpe.Tokenizer(bpe.patterns.GPT2, {i: bytes([i]) for i in range(256)}, None, {}, name="bytes")
    return LoadedModel(model=model.eval(), config=cfg, tokenizer=tok, chat_template=None,
                       name="tiny-random", path=Path("tiny"), dtype=torch.float32,
                       device=torch.device(device), weight_format="float32")
