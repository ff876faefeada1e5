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
from llm_playground.model.network.weight_contract import ModelLoadError, check_weights, expected_shapes
from llm_playground.model.weights import metadata_checks as checks

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)


# Weight dtypes accepted (safetensors names); integer, bool and float8 tensors are refused where
# float weights belong (they would be cast silently: int8 codes read as numbers).
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


def _inside(directory: Path, name) -> Path:
    """directory/name when it stays inside the folder: no absolute path, no '..', no symlink
    whose target leaves the folder. One exception: a Hugging Face hub snapshot
    (models--X/snapshots/REV/) whose files are symlinks into the same repo's blobs/ folder."""
    if not isinstance(name, str) or not name:
        raise ModelLoadError(f"{directory}: file name {name!r:.60} is not a path string")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or name.startswith(("/", "\\")) or "\x00" in name:
        raise ModelLoadError(f"{directory}: {name!r:.80} leaves the model folder (absolute paths "
                             f"and '..' are refused)")
    path = directory / rel
    real, base = path.resolve(), directory.resolve()
    if real != base and base not in real.parents:
        hub = base.parent.parent / "blobs" if base.parent.name == "snapshots" else None
        if hub is None or hub.resolve() not in real.parents:
            raise ModelLoadError(f"{path}: a symlink to {real}, outside the model folder; refused "
                                 f"(copy the file into the folder)")
    return path


def _read_json(path: Path, want=dict):
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path.parent}: no {path.name} (not a Hugging Face model directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ModelLoadError(f"{path}: JSON nested too deeply") from None
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read it ({e.strerror or e})") from None
    if want is not None and not isinstance(doc, want):
        raise ModelLoadError(f"{path}: expected a JSON object, got {type(doc).__name__ if doc is not None else 'null'}")
    return doc


def _rope(raw: dict, src: str) -> tuple[float, dict | None]:
    """(theta, Llama-3 scaling or None) from either config spelling."""
    params, legacy = raw.get("rope_parameters"), raw.get("rope_scaling")
    for key, value in (("rope_parameters", params), ("rope_scaling", legacy)):
        if value is not None and not isinstance(value, dict):
            raise ModelLoadError(f"{src}: {key} must be an object or null, got {type(value).__name__}")
    params, legacy = params or {}, legacy or {}
    key = "rope_parameters.rope_theta" if "rope_theta" in params else "rope_theta"
    theta = checks.number(params.get("rope_theta", raw.get("rope_theta", 10000.0)), key, src)
    scaling = {**legacy, **params}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise ModelLoadError(f"{src}: rope type {rope_type!r:.40} is not supported (only default and llama3)")
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in keys if k not in scaling]
    if missing:
        raise ModelLoadError(f"{src}: llama3 rope scaling lacks {', '.join(missing)}")
    return theta, checks.llama3_scaling(scaling, "rope_scaling", src)


def read_hf_config(directory: Path) -> ModelConfig:
    """The ModelConfig from a Hugging Face directory's config.json (Llama only). Every field is
    read typed and bounded (model/weights/metadata_checks.py): one line naming the field."""
    path = _inside(directory, "config.json")
    raw = _read_json(path)
    src = str(path)
    archs = raw.get("architectures") or []
    if isinstance(archs, str):
        archs = [archs]
    model_type = raw.get("model_type")
    if model_type != "llama" and not (isinstance(archs, list)
                                      and any(a in SUPPORTED_ARCHITECTURES for a in archs)):
        raise ModelLoadError(f"{directory}: architecture {archs or model_type!r} is not supported "
                             f"(only Llama: {', '.join(SUPPORTED_ARCHITECTURES)})")
    for flag in ("attention_bias", "mlp_bias"):
        if raw.get(flag):
            raise ModelLoadError(f"{directory}: {flag}=true is not supported")
    if raw.get("hidden_act", "silu") != "silu":
        raise ModelLoadError(f"{directory}: hidden_act {raw['hidden_act']!r:.40} is not supported (only silu)")

    def need(key: str):
        if key not in raw or raw[key] is None:
            raise ModelLoadError(f"{src} lacks {key!r}")
        return raw[key]

    heads = checks.integer(need("num_attention_heads"), "num_attention_heads", src)
    hidden = checks.integer(need("hidden_size"), "hidden_size", src)
    kv_heads = checks.integer(raw.get("num_key_value_heads") or heads, "num_key_value_heads", src,
                              high=heads)
    if heads % kv_heads:
        raise ModelLoadError(f"{src}: num_attention_heads ({heads}) is not a multiple of "
                             f"num_key_value_heads ({kv_heads})")
    vocab = checks.integer(need("vocab_size"), "vocab_size", src)
    theta, scaling = _rope(raw, src)
    eos = raw.get("eos_token_id")
    eos_list = eos if isinstance(eos, list) else ([] if eos is None else [eos])
    eos_ids = tuple(dict.fromkeys(checks.token_id(t, "eos_token_id", src, vocab) for t in eos_list))
    try:
        return ModelConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=checks.integer(need("intermediate_size"), "intermediate_size", src),
            num_layers=checks.integer(need("num_hidden_layers"), "num_hidden_layers", src),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=checks.integer(raw.get("head_dim") or hidden // heads, "head_dim", src),
            max_position=checks.integer(raw.get("max_position_embeddings", 2048),
                                        "max_position_embeddings", src, high=checks.MAX_POSITIONS),
            rope_theta=theta,
            rms_norm_eps=checks.number(raw.get("rms_norm_eps", 1e-6), "rms_norm_eps", src,
                                       positive=False),
            tie_word_embeddings=checks.boolean(raw.get("tie_word_embeddings", False),
                                               "tie_word_embeddings", src),
            rope_scaling=scaling,
            bos_token_id=checks.token_id(raw.get("bos_token_id"), "bos_token_id", src, vocab),
            eos_token_ids=eos_ids,
        )
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{src}: {e}") from None


def open_hf_weights(directory: Path, cfg: ModelConfig
                    ) -> tuple[dict[str, tuple[int, ...]], Callable[[str], torch.Tensor]]:
    """(name -> shape, get(name) -> tensor), memory-mapped; shapes and dtypes checked against the
    config before any tensor is read; every shard must lie inside the folder."""
    from safetensors import SafetensorError, safe_open

    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(_inside(directory, index.name)).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelLoadError(f"{index}: no weight_map")
        bad = next((v for v in weight_map.values() if not isinstance(v, str)), None)
        if bad is not None:
            raise ModelLoadError(f"{index}: weight_map entry {bad!r:.40} is not a file name")
        files = sorted(set(weight_map.values()))
    elif (directory / "model.safetensors").exists():
        files = ["model.safetensors"]
    elif any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise ModelLoadError(f"{directory}: only pickle checkpoints (.bin/.pt) found; they are never "
                             f"unpickled here, convert them to safetensors")
    else:
        raise ModelLoadError(f"{directory}: no model.safetensors or model.safetensors.index.json")
    handles, where, shapes, dtypes = {}, {}, {}, {}
    for name in files:
        path = _inside(directory, name)
        try:
            handles[name] = h = safe_open(str(path), framework="pt")
        except FileNotFoundError:
            raise ModelLoadError(f"{path}: shard listed in the index is missing") from None
        except (SafetensorError, OSError) as e:
            raise ModelLoadError(f"{path}: not a readable safetensors file ({e})") from None
        for key in h.keys():
            where[key] = name
            sl = h.get_slice(key)
            shapes[key] = tuple(sl.get_shape())
            dtypes[key] = sl.get_dtype()
    check_weights(cfg, shapes, str(directory), layers_field="num_hidden_layers")
    for key in expected_shapes(cfg):
        if dtypes[key] not in FLOAT_DTYPES:
            raise ModelLoadError(f"{directory / where[key]}: tensor {key} has dtype {dtypes[key]}; "
                                 f"weights must be floating point ({', '.join(FLOAT_DTYPES)})")

    def get(key: str) -> torch.Tensor:
        """Tensor `key` read from the safetensors shard that holds it."""
        return handles[where[key]].get_tensor(key)

    return shapes, get


def read_hf_tokenizer(directory: Path):
    """(bpe.Tokenizer, chat_template or None) from tokenizer.json / tokenizer_config.json."""
    path = directory / "tokenizer.json"
    if path.exists():
        path = _inside(directory, "tokenizer.json")
    else:
        raise ModelLoadError(f"{directory}: no tokenizer.json (a byte-level BPE tokenizer is needed)")
    from llm_playground import bpe
    try:
        tokenizer = bpe.load(str(path))
    except (ValueError, KeyError, OSError, RecursionError) as e:
        raise ModelLoadError(f"{path}: tokenizer not readable ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    template = None
    tc = directory / "tokenizer_config.json"
    if tc.exists():
        template = _read_json(_inside(directory, tc.name)).get("chat_template")
    jinja = directory / "chat_template.jinja"
    if template is None and jinja.exists():
        try:
            template = _inside(directory, jinja.name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"{jinja}: not readable as UTF-8 text ({e})") from None
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is not None and not isinstance(template, str):
        raise ModelLoadError(f"{tc}: chat_template must be a string, got {type(template).__name__}")
    return tokenizer, template
