"""The weight contract between the file readers and the model: names, shapes, one error class.

Both readers (model/weights/gguf_file.py, model/weights/hf_folder.py) turn a file into a dict of tensors named
the Hugging Face way (`model.layers.{i}.self_attn.q_proj.weight`, ...) and oriented the Hugging
Face way ((out_features, in_features)). `expected_shapes` says what a ModelConfig needs and
`check_weights` compares a dict against it with an error naming the first disagreement. This
module does not read files and does not build the model.
"""
from __future__ import annotations

from collections.abc import Mapping

from llm_playground.model.network.config import ModelConfig


class ModelLoadError(RuntimeError):
    """A model file or directory could not be loaded; the message names the problem in one line."""


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a Llama model of this config needs, with its (out, in) shape."""
    H, D, I = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    q_out, kv_out = cfg.num_heads * D, cfg.num_kv_heads * D
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (cfg.vocab_size, H),
        "model.norm.weight": (H,),
    }
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, H)
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (H,)
        shapes[p + "post_attention_layernorm.weight"] = (H,)
        shapes[p + "self_attn.q_proj.weight"] = (q_out, H)
        shapes[p + "self_attn.k_proj.weight"] = (kv_out, H)
        shapes[p + "self_attn.v_proj.weight"] = (kv_out, H)
        shapes[p + "self_attn.o_proj.weight"] = (H, q_out)
        shapes[p + "mlp.gate_proj.weight"] = (I, H)
        shapes[p + "mlp.up_proj.weight"] = (I, H)
        shapes[p + "mlp.down_proj.weight"] = (H, I)
    return shapes


def layers_present(names) -> int:
    """How many decoder layers the tensor names hold: n when model.layers.0 .. n-1 all appear."""
    found = set()
    for name in names:
        if name.startswith("model.layers."):
            index = name.split(".", 3)[2]
            if index.isdigit():
                found.add(int(index))
    n = 0
    while n in found:
        n += 1
    return n


def check_weights(cfg: ModelConfig, shapes: Mapping[str, tuple[int, ...]], source: str,
                  layers_field: str = "num_layers") -> None:
    """Raise ModelLoadError if a needed tensor is missing or its shape disagrees with the config.

    `shapes` maps the names found in the file to their shapes; extra names are ignored (rotary
    caches, biases of other architectures are refused by the config, not here). The layer count
    is compared with the layers present first (`layers_field`: the file's name for it), so a
    crafted count costs nothing: no per-layer work is done for layers the file does not hold.
    """
    present = layers_present(shapes)
    if cfg.num_layers > present:
        raise ModelLoadError(f"{source}: {layers_field} = {cfg.num_layers} but the weights hold "
                             f"{present} layers (model.layers.0..{present - 1})" if present else
                             f"{source}: {layers_field} = {cfg.num_layers} but the weights hold "
                             f"no layer (no model.layers.0.* tensor)")
    for name, want in expected_shapes(cfg).items():
        if name not in shapes:
            raise ModelLoadError(f"{source}: tensor {name} is missing")
        got = tuple(int(s) for s in shapes[name])
        if got != want:
            raise ModelLoadError(f"{source}: tensor {name} has shape {got} but the config "
                                 f"(hidden {cfg.hidden_size}, heads {cfg.num_heads}/{cfg.num_kv_heads}, "
                                 f"head dim {cfg.head_dim}, ffn {cfg.intermediate_size}, "
                                 f"vocab {cfg.vocab_size}) needs {want}")
