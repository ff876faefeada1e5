"""Hugging Face directory reader: sharded safetensors + tokenizer.json load through load_model to
transformers' logits and tokenizers' ids; bad directories give one ModelLoadError each."""
from __future__ import annotations

import json

import pytest
import torch

from llm_playground.model.weights.loader import load_model
from llm_playground.model.network.weight_contract import ModelLoadError
from paged_helpers import Pager
from tiny_models import TEMPLATE, random_hf_model, write_tokenizer

import transformers  # noqa: F401  (test oracle: installed by make test)

def test_sharded_directory_loads_like_transformers(tmp_path):
    hf = random_hf_model(9, vocab_size=300, tie_word_embeddings=False)
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ref_tok = write_tokenizer(tmp_path, 300)
    loaded = load_model(tmp_path, dtype="float32", device="cpu")
    assert loaded.chat_template == TEMPLATE and loaded.dtype == torch.float32
    text = "hello the lazy fox"
    ids = loaded.tokenizer.encode(text)
    assert ids == ref_tok.encode(text).ids
    cfg = loaded.config
    pager = Pager(cfg, num_blocks=16, block_size=4, seed=4)
    logits = loaded.model.compute_logits(loaded.model.forward(torch.tensor(ids), pager.batch([(0, len(ids))]),
                                                              pager.kv))
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    assert (logits - ref).abs().max().item() < 1e-4


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path, dtype="float32", device="cpu")


def test_pickle_checkpoint_is_refused(tmp_path):
    random_hf_model(1).config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04 not unpickled")
    with pytest.raises(ModelLoadError, match="never unpickled"):
        load_model(tmp_path, dtype="float32", device="cpu")


def test_unsupported_architecture(tmp_path):
    random_hf_model(1).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match="architecture .*GPT2LMHeadModel.* is not supported"):
        load_model(tmp_path, dtype="float32", device="cpu")


def test_shapes_disagree_with_config(tmp_path):
    random_hf_model(1).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["intermediate_size"] += 16
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match="gate_proj.weight has shape"):
        load_model(tmp_path, dtype="float32", device="cpu")


def test_missing_shard_and_corrupt_safetensors(tmp_path):
    random_hf_model(1).save_pretrained(tmp_path, max_shard_size="100KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    shards[-1].unlink()
    with pytest.raises(ModelLoadError, match="shard listed in the index is missing"):
        load_model(tmp_path, dtype="float32", device="cpu")
    shards[-1].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        load_model(tmp_path, dtype="float32", device="cpu")


@pytest.mark.parametrize("fmt,tol", [("bfloat16", 0.05), ("float16", 0.01), ("int8", 0.08)])
def test_reduced_precision_formats_stay_near_float32(tmp_path, fmt, tol):
    hf = random_hf_model(3, vocab_size=300)
    hf.save_pretrained(tmp_path)
    write_tokenizer(tmp_path, 300)
    exact, fast = load_model(tmp_path, dtype="float32", device="cpu"), load_model(tmp_path, dtype=fmt, device="cpu")
    assert fast.weight_format == fmt and fast.dtype == (torch.float16 if fmt == "float16" else torch.bfloat16)
    ids = list(range(10, 60, 3))
    out = []
    for loaded in (exact, fast):
        pager = Pager(loaded.config, num_blocks=16, block_size=4, dtype=loaded.dtype, seed=6)
        out.append(loaded.model.compute_logits(loaded.model.forward(torch.tensor(ids), pager.batch([(0, len(ids))]),
                                                                    pager.kv)))
        probs = loaded.model.attention_probs(ids, layer=1, head=2)             # (T, T)
        assert torch.allclose(probs.sum(-1), torch.ones(len(ids)), atol=1e-3)
    scale = out[0].abs().max().item()
    assert (out[1] - out[0]).abs().max().item() < tol * scale
