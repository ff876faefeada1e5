"""Read a Llama GGUF file: config from its metadata, weights dequantized, tokenizer through bpe.

The file is opened with the `gguf` package's `GGUFReader` (memory-mapped). Tensors are renamed to
the Hugging Face names (model/network/weight_contract.py) and dequantized to float32 with
`gguf.quants.dequantize` for the types listed in SUPPORTED_TYPES; any other type is refused with
its name. llama.cpp's converter permutes the rows of attn_q / attn_k for its interleaved RoPE;
`unpermute_rows` undoes that (as transformers' GGUF loader does) so our rotate-half RoPE applies.
This module does not build the model and does not run the quantized arithmetic itself.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from llm_playground.bpe.formats.gguf_reader import TruncatedGGUF, checked_reader_class
from llm_playground.model.network.config import ModelConfig
from llm_playground.model.weights import metadata_checks as checks
from llm_playground.model.network.weight_contract import ModelLoadError, check_weights

SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                   "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")

_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
                 "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


def open_gguf(path: Path):
    """GGUFReader over `path`, or ModelLoadError naming what is wrong with the file."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    try:
        reader = checked_reader_class()(str(path), "r")
        reader._path = str(path)         # for messages
        return reader
    except TruncatedGGUF as e:
        raise ModelLoadError(f"{path}: {e}") from None
    except (ValueError, IndexError, KeyError, OSError, struct.error) as e:
        raise ModelLoadError(f"{path}: corrupt or truncated GGUF file ({type(e).__name__}: {e})") from None


def _field(reader, key: str, default=None, required: bool = False):
    """The value of metadata `key` (default when absent); ModelLoadError naming the file."""
    where = getattr(reader, "_path", "GGUF file")
    f = reader.fields.get(key)
    if f is None:
        if required:
            raise ModelLoadError(f"{where}: GGUF metadata lacks {key}")
        return default
    try:
        return f.contents()
    except (ValueError, IndexError, UnicodeDecodeError, TypeError) as e:
        raise ModelLoadError(f"{where}: GGUF metadata {key} is unreadable ({e})") from None


def read_gguf_config(reader, path: Path) -> ModelConfig:
    """The ModelConfig from a GGUF file's metadata (Llama only; unsupported features raise).
    Every number is read typed and bounded (model/weights/metadata_checks.py): one line naming
    the file and the key for a wrong type, an out-of-range or an absurd value."""
    arch = _field(reader, "general.architecture", required=True)
    if arch != "llama":
        raise ModelLoadError(f"{path}: architecture {arch!r:.60} is not supported (only 'llama')")
    a = f"{arch}."
    src = str(path)
    scaling_type = _field(reader, a + "rope.scaling.type", "none")
    if scaling_type not in ("none", None):
        raise ModelLoadError(f"{path}: rope scaling type {scaling_type!r:.60} is not supported")
    if any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise ModelLoadError(f"{path}: per-frequency rope factors (rope_freqs.weight, Llama 3.1 "
                             f"GGUF) are not supported; load the Hugging Face directory instead")

    def get(key: str, default=None, required: bool = False):
        return _field(reader, a + key, default, required)

    heads = checks.integer(get("attention.head_count", required=True), a + "attention.head_count", src)
    hidden = checks.integer(get("embedding_length", required=True), a + "embedding_length", src)
    kv_heads = checks.integer(get("attention.head_count_kv", heads), a + "attention.head_count_kv",
                              src, high=heads)
    if heads % kv_heads:
        raise ModelLoadError(f"{path}: {a}attention.head_count ({heads}) is not a multiple of "
                             f"{a}attention.head_count_kv ({kv_heads})")
    head_dim = get("attention.key_length", 0) or hidden // heads
    head_dim = checks.integer(head_dim, a + "attention.key_length", src)
    names = {t.name for t in reader.tensors}
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = get("vocab_size") or (len(tokens.data) if tokens is not None else None)
    if vocab is None:
        raise ModelLoadError(f"{path}: vocabulary size unknown (no {a}vocab_size nor tokenizer tokens)")
    vocab = checks.integer(vocab, a + "vocab_size", src)
    eos_ids = tuple(dict.fromkeys(
        checks.token_id(_field(reader, key), key, src, vocab)
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
        if _field(reader, key) is not None))
    try:
        return ModelConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=checks.integer(get("feed_forward_length", required=True),
                                             a + "feed_forward_length", src),
            num_layers=checks.integer(get("block_count", required=True), a + "block_count", src),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            max_position=checks.integer(get("context_length", 2048), a + "context_length", src,
                                        high=checks.MAX_POSITIONS),
            rope_theta=checks.number(get("rope.freq_base", 10000.0), a + "rope.freq_base", src),
            rms_norm_eps=checks.number(get("attention.layer_norm_rms_epsilon", 1e-5),
                                       a + "attention.layer_norm_rms_epsilon", src, positive=False),
            tie_word_embeddings="output.weight" not in names,
            bos_token_id=checks.token_id(_field(reader, "tokenizer.ggml.bos_token_id"),
                                         "tokenizer.ggml.bos_token_id", src, vocab),
            eos_token_ids=eos_ids,
        )
    except ValueError as e:
        raise ModelLoadError(f"{path}: {e}") from None


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face tensor name for a GGUF tensor name, or None when it has none."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".")   # blk.{i}.{kind}.weight
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _LAYER_NAMES and parts[3] == "weight":
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.weight"
    return None


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: (n_head, 2, D/2) interleave -> rotate-half halves."""
    rows = w.shape[0]
    half = rows // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def open_gguf_weights(reader, cfg: ModelConfig, path: Path
                      ) -> tuple[dict[str, tuple[int, ...]], Callable[[str], torch.Tensor]]:
    """(HF name -> shape, get(HF name) -> float32 tensor); types and shapes checked up front."""
    from gguf import quants
    tensors, shapes = {}, {}
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            continue
        if t.tensor_type.name not in SUPPORTED_TYPES:
            raise ModelLoadError(f"{path}: tensor {t.name} has quantization type {t.tensor_type.name}, "
                                 f"which is not supported (supported: {', '.join(SUPPORTED_TYPES)})")
        tensors[name] = t
        shapes[name] = tuple(int(s) for s in reversed(t.shape.tolist()))   # GGUF lists ne0 first
    check_weights(cfg, shapes, str(path), layers_field="llama.block_count")

    def get(name: str) -> torch.Tensor:
        """Tensor `name` dequantized to float32, q/k rows unpermuted, as a writable copy."""
        t = tensors[name]
        try:
            w = quants.dequantize(t.data, t.tensor_type)
        except (ValueError, NotImplementedError) as e:
            raise ModelLoadError(f"{path}: cannot dequantize {t.name} ({e})") from None
        w = w.reshape(shapes[name])
        if name.endswith("q_proj.weight"):
            w = unpermute_rows(w, cfg.num_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute_rows(w, cfg.num_kv_heads)
        return torch.from_numpy(np.array(w, dtype=np.float32, order="C"))   # a writable copy

    return shapes, get


def read_gguf_tokenizer(path: Path, reader=None):
    """(bpe.Tokenizer, chat_template or None) through bpe.formats.gguf; `reader` (open_gguf's,
    already parsed) spares a second parse of the header."""
    try:
        from llm_playground.bpe.formats.gguf import read_gguf_tokenizer as read
    except ImportError as e:
        raise ModelLoadError(f"the GGUF tokenizer reader (bpe.formats.gguf) is unavailable: {e}") from None
    try:
        tokenizer, meta = read(str(path), reader=reader)
    except (ValueError, KeyError) as e:
        raise ModelLoadError(f"{path}: tokenizer not readable ({e})") from None
    return tokenizer, meta.get("chat_template")
