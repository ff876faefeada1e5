"""Read a Hugging Face Llama model directory: config.json, safetensors weights, tokenizer.json.

Weights come from `model.safetensors` or from the shards listed in `model.safetensors.index.json`,
opened memory-mapped through `safetensors.safe_open` (never a pickle: `.bin` checkpoints are
refused). The config accepts both the transformers 4 (`rope_theta`, `rope_scaling`) and 5
(`rope_parameters`) spellings. The tokenizer is read through our `bpe` package. This module does
not build the model (model/weights/loader.py does).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from llm_playground.model.network.config import ModelConfig
from llm_playground.model.network.weight_contract import ModelLoadError, check_weights

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path.parent}: no {path.name} (not a Hugging Face model directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from None


def _rope(raw: dict) -> tuple[float, dict | None]:
    """(theta, Llama-3 scaling or None) from either config spelling."""
    params = raw.get("rope_parameters") or {}
    legacy = raw.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    scaling = {**legacy, **params}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise ModelLoadError(f"rope type {rope_type!r} is not supported (only default and llama3)")
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in keys if k not in scaling]
    if missing:
        raise ModelLoadError(f"llama3 rope scaling lacks {', '.join(missing)}")
    return theta, {k: scaling[k] for k in keys}


def read_hf_config(directory: Path) -> ModelConfig:
    """The ModelConfig from a Hugging Face directory's config.json (Llama only)."""
    raw = _read_json(directory / "config.json")
    archs = raw.get("architectures") or []
    model_type = raw.get("model_type")
    if model_type != "llama" and not any(a in SUPPORTED_ARCHITECTURES for a in archs):
        raise ModelLoadError(f"{directory}: architecture {archs or model_type!r} is not supported "
                             f"(only Llama: {', '.join(SUPPORTED_ARCHITECTURES)})")
    for flag in ("attention_bias", "mlp_bias"):
        if raw.get(flag):
            raise ModelLoadError(f"{directory}: {flag}=true is not supported")
    if raw.get("hidden_act", "silu") != "silu":
        raise ModelLoadError(f"{directory}: hidden_act {raw['hidden_act']!r} is not supported (only silu)")
    try:
        heads = int(raw["num_attention_heads"])
        theta, scaling = _rope(raw)
        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        return ModelConfig(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or raw["hidden_size"] // heads),
            max_position=int(raw.get("max_position_embeddings", 2048)),
            rope_theta=theta,
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            rope_scaling=scaling,
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )
    except KeyError as e:
        raise ModelLoadError(f"{directory}/config.json lacks {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{directory}/config.json: {e}") from None


def open_hf_weights(directory: Path, cfg: ModelConfig
                    ) -> tuple[dict[str, tuple[int, ...]], Callable[[str], torch.Tensor]]:
    """(name -> shape, get(name) -> tensor), memory-mapped; shapes checked against the config."""
    from safetensors import SafetensorError, safe_open

    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelLoadError(f"{index}: no weight_map")
        files = sorted(set(weight_map.values()))
    elif (directory / "model.safetensors").exists():
        files = ["model.safetensors"]
    elif any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise ModelLoadError(f"{directory}: only pickle checkpoints (.bin/.pt) found; they are never "
                             f"unpickled here, convert them to safetensors")
    else:
        raise ModelLoadError(f"{directory}: no model.safetensors or model.safetensors.index.json")
    handles, where, shapes = {}, {}, {}
    for name in files:
        path = directory / name
        try:
            handles[name] = h = safe_open(str(path), framework="pt")
        except FileNotFoundError:
            raise ModelLoadError(f"{path}: shard listed in the index is missing") from None
        except (SafetensorError, OSError) as e:
            raise ModelLoadError(f"{path}: not a readable safetensors file ({e})") from None
        for key in h.keys():
            where[key] = name
            shapes[key] = tuple(h.get_slice(key).get_shape())
    check_weights(cfg, shapes, str(directory))

    def get(key: str) -> torch.Tensor:
        """Tensor `key` read from the safetensors shard that holds it."""
        return handles[where[key]].get_tensor(key)

    return shapes, get


def read_hf_tokenizer(directory: Path):
    """(bpe.Tokenizer, chat_template or None) from tokenizer.json / tokenizer_config.json."""
    path = directory / "tokenizer.json"
    if not path.exists():
        raise ModelLoadError(f"{directory}: no tokenizer.json (a byte-level BPE tokenizer is needed)")
    from llm_playground import bpe
    try:
        tokenizer = bpe.load(str(path))
    except (ValueError, KeyError, OSError) as e:
        raise ModelLoadError(f"{path}: tokenizer not readable ({e})") from None
    template = None
    tc = directory / "tokenizer_config.json"
    if tc.exists():
        template = _read_json(tc).get("chat_template")
    jinja = directory / "chat_template.jinja"
    if template is None and jinja.exists():
        template = jinja.read_text(encoding="utf-8")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return tokenizer, template
