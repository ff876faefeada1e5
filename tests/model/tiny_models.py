"""Test helper: tiny random transformers Llama models, and a llama.cpp-style GGUF writer for them.

`random_hf_model` builds a transformers LlamaForCausalLM with widened random weights (so that
attention is not uniform); `write_gguf` writes its weights the way llama.cpp's converter does
(GGUF names, q/k rows permuted for interleaved RoPE, shapes in ggml order). Not product code.
"""
from __future__ import annotations

import json

import numpy as np
import torch

GGUF_LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def random_hf_model(seed: int, **overrides):
    import transformers
    torch.manual_seed(seed)
    kw = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-5, head_dim=None, tie_word_embeddings=False)
    kw.update(overrides)
    if kw["head_dim"] is None:
        kw["head_dim"] = kw["hidden_size"] // kw["num_attention_heads"]
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
            else:
                p.uniform_(0.5, 1.5)
    return hf


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (the inverse of what loaders undo)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(hf, path, arch: str = "llama", dtype=None, overrides: dict | None = None,
               raw_tensor: tuple[str, object] | None = None, tokenizer: bool = False,
               quant=None) -> None:
    """Write hf's weights as a llama.cpp-style GGUF (tokenizer metadata only when asked).

    dtype: None = float32, or np.float16; overrides: metadata values replacing the true ones
    (e.g. {"feed_forward_length": 96}); raw_tensor: (gguf name, GGMLQuantizationType) to store
    that one tensor in a given raw type (zeros of the right byte shape); tokenizer: add a
    byte-level BPE of 256 bytes, 2 merges and <|im_start|> / <|im_end|> (vocab_size must be 260);
    quant: a GGMLQuantizationType, or {gguf name: type} (others float), to store the matrices
    quantised by the gguf package (rows must be whole blocks: widths a multiple of 32).
    """
    import gguf
    cfg = hf.config
    meta = {"block_count": cfg.num_hidden_layers, "context_length": cfg.max_position_embeddings,
            "embedding_length": cfg.hidden_size, "feed_forward_length": cfg.intermediate_size,
            "head_count": cfg.num_attention_heads, "head_count_kv": cfg.num_key_value_heads,
            "rope_freq_base": cfg.rope_parameters["rope_theta"], "rms_eps": cfg.rms_norm_eps,
            "vocab_size": cfg.vocab_size}
    meta.update(overrides or {})
    w = gguf.GGUFWriter(str(path), arch)
    keys = {"block_count": "block_count", "context_length": "context_length",
            "embedding_length": "embedding_length", "feed_forward_length": "feed_forward_length",
            "head_count": "attention.head_count", "head_count_kv": "attention.head_count_kv",
            "rope_freq_base": "rope.freq_base", "rms_eps": "attention.layer_norm_rms_epsilon",
            "vocab_size": "vocab_size"}
    floats = ("rope_freq_base", "rms_eps")
    for name, key in keys.items():   # a str override is written as a string (a wrongly typed key)
        value = meta[name]
        if isinstance(value, str):
            w.add_string(f"{arch}.{key}", value)
        elif name in floats:
            w.add_float32(f"{arch}.{key}", value)
        else:
            w.add_uint32(f"{arch}.{key}", value)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)
    if tokenizer:
        from llm_playground.bpe.formats.common import bytes_to_byte_level
        assert cfg.vocab_size == 260, "the test tokenizer has 260 tokens"
        w.add_tokenizer_model("gpt2")
        w.add_token_list([bytes_to_byte_level(bytes([i])) for i in range(256)]
                         + ["th", "the", "<|im_start|>", "<|im_end|>"])
        w.add_token_merges(["t h", "th e"])
        w.add_token_types([1] * 258 + [3, 3])
    for name, t in hf.state_dict().items():
        a = t.detach().float().numpy()
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if name.endswith("q_proj.weight"):
            a = llama_cpp_permute(a, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            a = llama_cpp_permute(a, cfg.num_key_value_heads)
        gname = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}.get(name)
        if gname is None:
            parts = name.split(".")             # model.layers.{i}.{kind...}.weight
            gname = f"blk.{parts[2]}.{GGUF_LAYER['.'.join(parts[3:-1])]}.weight"
        if raw_tensor is not None and raw_tensor[0] == gname:
            qtype = raw_tensor[1]
            byte_shape = gguf.quants.quant_shape_to_byte_shape(a.shape, qtype)
            w.add_tensor(gname, np.zeros(byte_shape, dtype=np.uint8), raw_dtype=qtype)
            continue
        qtype = quant.get(gname) if isinstance(quant, dict) else quant
        if qtype is not None and a.ndim == 2:
            w.add_tensor(gname, gguf.quants.quantize(np.ascontiguousarray(a), qtype), raw_dtype=qtype)
            continue
        if dtype is not None and a.ndim == 2:
            a = a.astype(dtype)
        w.add_tensor(gname, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"


def write_tokenizer(directory, vocab_size: int):
    """A byte-level BPE tokenizer.json trained by Hugging Face tokenizers, and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    text = ["the quick brown fox jumps over the lazy dog", "hello world, hello paged attention"] * 20
    tok.train_from_iterator(text, trainer)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    return tok
