"""GGUF reader: llama.cpp-layout files of tiny random models load to transformers' logits, and
bad files (wrong magic, truncated, shapes against the config, foreign architecture, unsupported
quantization) are refused with one ModelLoadError naming the problem."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from llm_playground.model.weights import gguf_file
from llm_playground.model.weights.loader import build_model, load_model
from llm_playground.model.network.weight_contract import ModelLoadError
from paged_helpers import Pager
from tiny_models import random_hf_model, write_gguf

import transformers  # noqa: F401  (test oracle: installed by make test)
import gguf


def ours_from_gguf(path):
    reader = gguf_file.open_gguf(path)
    cfg = gguf_file.read_gguf_config(reader, path)
    _, get = gguf_file.open_gguf_weights(reader, cfg, path)
    return build_model(cfg, get, "float32", torch.float32, torch.device("cpu")), cfg


@pytest.mark.parametrize("tied,dtype", [(False, None), (True, np.float16)])
def test_gguf_roundtrip_matches_transformers(tmp_path, tied, dtype):
    hf = random_hf_model(4, tie_word_embeddings=tied, num_attention_heads=6, num_key_value_heads=2)
    if dtype is np.float16:   # make the weights exactly representable so the comparison stays exact
        with torch.no_grad():
            for p in hf.parameters():
                p.copy_(p.half().float())
    path = tmp_path / "tiny.gguf"
    write_gguf(hf, path, dtype=dtype)
    ours, cfg = ours_from_gguf(path)
    assert cfg.tie_word_embeddings == tied and cfg.eos_token_ids == (2,)
    ids = list(range(3, 40, 3))
    pager = Pager(cfg, num_blocks=16, block_size=4, seed=2)
    logits = ours.compute_logits(ours.forward(torch.tensor(ids), pager.batch([(0, len(ids))]), pager.kv))
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    assert (logits - ref).abs().max().item() < 1e-4


@pytest.fixture
def tiny_hf():
    return random_hf_model(1)


def test_wrong_magic(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGML" + bytes(100))
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_model(path, dtype="float32", device="cpu")


@pytest.mark.parametrize("keep", [0.5, 0.02, 0.99, 0.0001])
def test_truncated_file(tmp_path, tiny_hf, keep):
    path = tmp_path / "model.gguf"
    write_gguf(tiny_hf, path)
    data = path.read_bytes()
    full = gguf.GGUFReader(str(path))       # oracle: where each tensor lies in the complete file
    cut = max(8, int(len(data) * keep))
    path.write_bytes(data[:cut])
    with pytest.raises(ModelLoadError, match="truncated") as info:
        load_model(path, dtype="float32", device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and "larger dtype" not in msg
    assert f"{cut} bytes" in msg                         # the actual size is stated
    if cut > full.data_offset:                           # the header is whole: the tensors say why
        need = max(t.data_offset + t.n_bytes for t in full.tensors)
        first = next(t for t in full.tensors if t.data_offset + t.n_bytes > cut)
        assert f"tensors need {need}" in msg and f"tensor {first.name} " in msg
    else:
        assert "header runs past the end" in msg


def test_shapes_disagree_with_config(tmp_path, tiny_hf):
    path = tmp_path / "model.gguf"
    write_gguf(tiny_hf, path, overrides={"feed_forward_length": 96})
    with pytest.raises(ModelLoadError, match=r"ffn_gate|gate_proj.*shape"):
        load_model(path, dtype="float32", device="cpu")


def test_unsupported_architecture(tmp_path, tiny_hf):
    path = tmp_path / "model.gguf"
    write_gguf(tiny_hf, path, arch="falcon")
    with pytest.raises(ModelLoadError, match="architecture 'falcon' is not supported"):
        load_model(path, dtype="float32", device="cpu")


def test_unsupported_quant_type(tmp_path):
    hf = random_hf_model(1, hidden_size=64, intermediate_size=96)
    path = tmp_path / "model.gguf"
    qtype = gguf.GGMLQuantizationType.IQ4_NL
    write_gguf(hf, path, raw_tensor=("blk.1.ffn_up.weight", qtype))
    with pytest.raises(ModelLoadError, match="blk.1.ffn_up.weight has quantization type IQ4_NL"):
        load_model(path, dtype="float32", device="cpu")


def test_missing_path_and_unknown_dtype(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file or directory"):
        load_model(tmp_path / "nope.gguf", dtype="float32", device="cpu")
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        load_model(tmp_path, dtype="float8", device="cpu")
