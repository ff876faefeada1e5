"""Test helper: a complete tiny GGUF file (Llama metadata, random float32 weights, a byte-level BPE
tokenizer with two merges and two control tokens, a chat template), so `load_model(path)` runs
its whole real path in well under a second. Weights are written in GGUF names and HF shapes, as
the gguf package's writer takes them; q/k rows are not permuted (the tests that use this file
compare two loads of the same file, not against transformers). Not product code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from llm_playground.bpe.formats.common import bytes_to_byte_level
from llm_playground.model.network.config import ModelConfig
from llm_playground.model.network.weight_contract import expected_shapes
from llm_playground.model.weights import gguf_file

MERGES = [(b"a", b"b"), (b"ab", b"c")]
CONTROL = ["<s>", "</s>"]
VOCAB = 256 + len(MERGES) + len(CONTROL)          # 260
EOS = VOCAB - 1
TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant\n{% endif %}")


def tiny_gguf_config(tied: bool = True) -> ModelConfig:
    """The ModelConfig the file's metadata describes."""
    return ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=2,
                       num_heads=4, num_kv_heads=2, head_dim=8, max_position=256,
                       rope_theta=10000.0, tie_word_embeddings=tied, eos_token_ids=(EOS,))


def _gguf_name(hf: str) -> str:
    inverse_global = {v: k for k, v in gguf_file._GLOBAL_NAMES.items()}
    if hf in inverse_global:
        return inverse_global[hf]
    inverse_layer = {v: k for k, v in gguf_file._LAYER_NAMES.items()}
    _, _, i, *kind, _ = hf.split(".")                    # model.layers.{i}.{kind...}.weight
    return f"blk.{i}.{inverse_layer['.'.join(kind)]}.weight"


def write_tiny_gguf(path: Path, seed: int = 0, tied: bool = True) -> Path:
    """Write the file; returns `path`."""
    import gguf
    cfg = tiny_gguf_config(tied)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-gguf")
    w.add_block_count(cfg.num_layers)
    w.add_context_length(cfg.max_position)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    tokens = [bytes_to_byte_level(bytes([b])) for b in range(256)]
    tokens += [bytes_to_byte_level(a + b) for a, b in MERGES] + CONTROL
    w.add_token_list(tokens)
    w.add_token_types([1] * (256 + len(MERGES)) + [3] * len(CONTROL))
    w.add_token_merges([f"{bytes_to_byte_level(a)} {bytes_to_byte_level(b)}" for a, b in MERGES])
    w.add_eos_token_id(EOS)
    w.add_chat_template(TEMPLATE)
    rng = np.random.default_rng(seed)
    for name, shape in expected_shapes(cfg).items():
        a = (rng.standard_normal(shape) * 0.5 + (1.0 if "norm" in name else 0.0)).astype(np.float32)
        w.add_tensor(_gguf_name(name), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
