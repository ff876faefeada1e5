"""Crafted model files: metadata is checked against its type, its range and the tensors present
before anything is sized from it. A refused file fails in under a second with one ModelLoadError
line naming the file and the field; an accepted one with an inflated context loads like the
honest file (the position tables are sized by what the engine uses) and gives its tokens.

Covers GGUF keys and config.json fields of the wrong type, out of range or absurd (heads 0, a NaN
rope base, a negative norm epsilon, 2^31 layers, a context of 2^31 - 1 or 10^10 tokens, null
documents), shard paths that leave the folder, and weights stored as integers or bools.
Memory: a subprocess loads the honest file, then every crafted one, and its peak RSS may grow by
at most 300 MB (before the fix: a 17 GB / 80 GB RoPE table, 5.7 GB for 2^31 layers).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llm_playground.model.network.weight_contract import ModelLoadError
from llm_playground.model.weights.loader import load_model
from tiny_models import random_hf_model, write_gguf, write_tokenizer

SECONDS = 1.0


@pytest.fixture(scope="module")
def hf_model():
    return random_hf_model(5, vocab_size=260)


@pytest.fixture(scope="module")
def honest_dir(tmp_path_factory, hf_model):
    d = tmp_path_factory.mktemp("honest") / "model"
    hf_model.save_pretrained(d, max_shard_size="100KB")
    write_tokenizer(d, 260)
    return d


def gguf_with(tmp_path, hf_model, **overrides) -> Path:
    path = tmp_path / "crafted.gguf"
    write_gguf(hf_model, path, overrides=overrides, tokenizer=True)
    return path


def dir_with(tmp_path, honest_dir, edit=None, raw: str | None = None) -> Path:
    d = tmp_path / "crafted"
    shutil.copytree(honest_dir, d, symlinks=True)
    if raw is not None:
        (d / "config.json").write_text(raw)
    elif edit is not None:
        cfg = json.loads((d / "config.json").read_text())
        edit(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
    return d


def refused(path, match: str) -> str:
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_model(path, dtype="float32", device="cpu")
    seconds = time.perf_counter() - t0
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    import re
    assert re.search(match, msg), msg
    assert seconds < SECONDS, f"refused after {seconds:.2f} s"
    return msg


GGUF_CASES = {  # override: (value, what the message must say)
    "block_count 2^31": ("block_count", 2**31, r"llama\.block_count = 2147483648 is absurd"),
    "block_count 1000": ("block_count", 1000, r"llama\.block_count = 1000 but the weights hold 3 layers"),
    "head_count 0": ("head_count", 0, r"llama\.attention\.head_count = 0 is out of range"),
    "head_count_kv 0": ("head_count_kv", 0, r"llama\.attention\.head_count_kv = 0 is out of range"),
    "head_count 3 of 2 kv": ("head_count_kv", 3, r"head_count_kv = 3 is out of range|not a multiple"),
    "rope base NaN": ("rope_freq_base", float("nan"), r"llama\.rope\.freq_base = nan is not a finite number"),
    "rope base inf": ("rope_freq_base", float("inf"), r"llama\.rope\.freq_base = inf is not a finite"),
    "rope base 0": ("rope_freq_base", 0.0, r"llama\.rope\.freq_base = 0.0 must be positive"),
    "eps negative": ("rms_eps", -1e-5, r"layer_norm_rms_epsilon = -[0-9.e-]+ must be >= 0"),
    "vocab 2^32-1": ("vocab_size", 2**32 - 1, r"llama\.vocab_size = 4294967295 is absurd"),
    "context as text": ("context_length", "8192", r"llama\.context_length must be an integer, got '8192'"),
    "context 0": ("context_length", 0, r"llama\.context_length = 0 is out of range"),
}


@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_crafted_gguf_is_refused_quickly(tmp_path, hf_model, case):
    key, value, says = GGUF_CASES[case]
    refused(gguf_with(tmp_path, hf_model, **{key: value}), says)


HF_CASES = {
    "layers 1e9": (lambda c: c.update(num_hidden_layers=10**9), r"num_hidden_layers = 1000000000 is absurd"),
    "layers 7": (lambda c: c.update(num_hidden_layers=7), r"num_hidden_layers = 7 but the weights hold 3 layers"),
    "heads 0": (lambda c: c.update(num_attention_heads=0), r"num_attention_heads = 0 is out of range"),
    "heads 4.5": (lambda c: c.update(num_attention_heads=4.5), r"num_attention_heads must be an integer, got 4.5"),
    "heads 'four'": (lambda c: c.update(num_attention_heads="four"), r"num_attention_heads must be an integer"),
    "kv heads true": (lambda c: c.update(num_key_value_heads=True), r"num_key_value_heads must be an integer, got True"),
    "hidden null": (lambda c: c.update(hidden_size=None), r"lacks 'hidden_size'"),
    "rope NaN": (lambda c: c.setdefault("rope_parameters", {}).update(rope_theta=float("nan")),
                 r"rope_theta = nan is not a finite number"),
    "rope NaN (legacy key)": (lambda c: (c.pop("rope_parameters", None), c.update(rope_theta=float("nan"))),
                              r"rope_theta = nan is not a finite number"),
    "eps negative": (lambda c: c.update(rms_norm_eps=-1e-6), r"rms_norm_eps = -1e-06 must be >= 0"),
    "rope_scaling text": (lambda c: (c.pop("rope_parameters", None), c.update(rope_scaling="yes")),
                          r"rope_scaling must be an object or null, got str"),
    "llama3 low == high": (lambda c: c.update(rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 2.0,
        "high_freq_factor": 2.0, "original_max_position_embeddings": 64}),
        r"high_freq_factor \(2.0\) must be above low_freq_factor"),
    "eos outside vocab": (lambda c: c.update(eos_token_id=[2, 70000]), r"eos_token_id = 70000 is outside the vocabulary \(0..259\)"),
    "eos text": (lambda c: c.update(eos_token_id="</s>"), r"eos_token_id must be an integer"),
    "tie 'yes'": (lambda c: c.update(tie_word_embeddings="yes"), r"tie_word_embeddings must be true or false"),
    "vocab 1e12": (lambda c: c.update(vocab_size=10**12), r"vocab_size = 1000000000000 is absurd"),
    "context 1e13": (lambda c: c.update(max_position_embeddings=10**13), r"max_position_embeddings = 10000000000000 is absurd"),
}


@pytest.mark.parametrize("case", list(HF_CASES))
def test_crafted_config_is_refused_quickly(tmp_path, honest_dir, case):
    edit, says = HF_CASES[case]
    refused(dir_with(tmp_path, honest_dir, edit), says)


@pytest.mark.parametrize("raw,says", [("null", "expected a JSON object, got null"),
                                      ("[1, 2]", "expected a JSON object, got list"),
                                      ("[" * 100_000, "not valid JSON|nested too deeply")],
                         ids=["null", "list", "nested"])
def test_config_that_is_no_object(tmp_path, honest_dir, raw, says):
    refused(dir_with(tmp_path, honest_dir, raw=raw), says)


# ---- accepted: an inflated context loads like the honest file --------------------------------
def _tokens(path):
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.engine.sampling_params import SamplingParams
    loaded = load_model(path, dtype="float32", device="cpu")
    engine = Engine(loaded, EngineConfig(device="cpu", num_blocks=32, block_size=8))
    ids = engine.generate(list(range(20, 60)), SamplingParams(max_tokens=10, ignore_eos=True))
    return ids, loaded.model.rope_cos.shape[0], engine


def test_inflated_gguf_context_serves_like_the_honest_file(tmp_path, hf_model):
    honest = tmp_path / "honest.gguf"
    write_gguf(hf_model, honest, tokenizer=True)
    want, honest_rows, _ = _tokens(honest)
    t0 = time.perf_counter()
    got, rows, engine = _tokens(gguf_with(tmp_path, hf_model, context_length=2**31 - 1))
    assert got == want and engine.model_config.max_position == 2**31 - 1
    assert rows <= max(8192, 32 * 8)       # the eager rows, or what the 32 x 8-token pool reaches
    assert time.perf_counter() - t0 < 5 * SECONDS


def test_inflated_hf_context_serves_like_the_honest_file(tmp_path, honest_dir):
    want, _, _ = _tokens(honest_dir)
    got, rows, engine = _tokens(dir_with(tmp_path, honest_dir,
                                         lambda c: c.update(max_position_embeddings=10**10)))
    assert got == want and rows <= 8192 and engine.max_model_len == 10**10


# ---- shard paths ---------------------------------------------------------------------------
def _move_first_shard(d: Path, outside: Path, target) -> None:
    index_path = d / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    outside.mkdir(exist_ok=True)
    os.replace(d / first, outside / first)
    index["weight_map"] = {k: (target(first) if v == first else v) for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "dotdot inside a name"])
def test_shard_index_may_not_leave_the_folder(tmp_path, honest_dir, how):
    d = dir_with(tmp_path, honest_dir)
    outside = tmp_path / "outside"
    target = {"dotdot": lambda f: f"../outside/{f}", "absolute": lambda f: str(outside / f),
              "dotdot inside a name": lambda f: f"sub/../../outside/{f}"}[how]
    _move_first_shard(d, outside, target)
    refused(d, r"leaves the model folder")


def test_symlinked_shard_pointing_outside_is_refused(tmp_path, honest_dir):
    d = dir_with(tmp_path, honest_dir)
    shard = sorted(d.glob("model-*.safetensors"))[0]
    (tmp_path / "elsewhere").mkdir()
    os.replace(shard, tmp_path / "elsewhere" / shard.name)
    os.symlink(tmp_path / "elsewhere" / shard.name, shard)
    refused(d, r"symlink to .* outside the model folder")


def test_symlinks_inside_the_folder_and_hub_snapshots_load(tmp_path, honest_dir):
    """Allowed: a symlink to a file in the same folder, and the Hugging Face hub cache layout
    (models--X/snapshots/REV/* -> ../../blobs/HASH). Oracle: the same logits as the folder."""
    want = load_model(honest_dir, dtype="float32", device="cpu").model.lm_head.weight.clone()
    d = dir_with(tmp_path, honest_dir)
    shard = sorted(d.glob("model-*.safetensors"))[0]
    (d / "store").mkdir()
    os.replace(shard, d / "store" / shard.name)
    os.symlink(Path("store") / shard.name, shard)
    assert torch.equal(load_model(d, dtype="float32", device="cpu").model.lm_head.weight, want)
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(p for p in honest_dir.iterdir())):
        shutil.copy(f, repo / "blobs" / f"blob{i}")
        os.symlink(Path("../../blobs") / f"blob{i}", snap / f.name)
    assert torch.equal(load_model(snap, dtype="float32", device="cpu").model.lm_head.weight, want)


# ---- weight dtypes -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,name", [(torch.int8, "I8"), (torch.bool, "BOOL"), (torch.int32, "I32"),
                                        (torch.float8_e4m3fn, "F8_E4M3"), (torch.uint8, "U8")])
def test_weights_of_a_non_float_dtype_are_refused(tmp_path, honest_dir, dtype, name):
    from safetensors.torch import load_file, save_file
    d = dir_with(tmp_path, honest_dir)
    key = "model.layers.1.self_attn.v_proj.weight"
    shard = d / json.loads((d / "model.safetensors.index.json").read_text())["weight_map"][key]
    tensors = load_file(str(shard))
    tensors[key] = (tensors[key] * 10).to(dtype)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    refused(d, rf"tensor {key} has dtype {name}; weights must be floating point")


def test_build_model_refuses_integer_tensors_from_any_reader():
    """The network's own check (whatever reader fed it): an int8 tensor is named, not cast."""
    from llm_playground.model.network.llama import LlamaForCausalLM
    from llm_playground.model.network.weight_contract import expected_shapes
    from llm_playground.model.network.config import ModelConfig
    cfg = ModelConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_layers=2, num_heads=2,
                      num_kv_heads=1, head_dim=8, max_position=64)
    weights = {n: torch.ones(s) for n, s in expected_shapes(cfg).items()}
    weights["model.layers.0.mlp.up_proj.weight"] = weights["model.layers.0.mlp.up_proj.weight"].to(torch.int8)
    with pytest.raises(ModelLoadError, match="up_proj.weight has dtype int8"):
        LlamaForCausalLM(cfg).load_weights(lambda n: weights[n])


# ---- memory ---------------------------------------------------------------------------------
MEMORY_PROBE = r"""
import json, resource, sys, time
from llm_playground.model.weights.loader import load_model
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {}
load_model(sys.argv[1], dtype="float32", device="cpu")
out["honest"] = peak()
for path in sys.argv[2:]:
    t0 = time.perf_counter()
    try:
        load_model(path, dtype="float32", device="cpu"); what = "accepted"
    except Exception as e:
        what = type(e).__name__
    out[path] = (what, time.perf_counter() - t0, peak())
print(json.dumps(out))
"""


def test_crafted_files_cost_no_more_memory_than_the_honest_one(tmp_path, hf_model, honest_dir):
    honest = tmp_path / "honest.gguf"
    write_gguf(hf_model, honest, tokenizer=True)
    crafted = []
    for i, over in enumerate([{"context_length": 2**31 - 1}, {"block_count": 2**31},
                              {"block_count": 3000}, {"vocab_size": 2**31}]):
        (tmp_path / f"g{i}").mkdir()
        write_gguf(hf_model, tmp_path / f"g{i}" / "m.gguf", overrides=over, tokenizer=True)
        crafted.append(str(tmp_path / f"g{i}" / "m.gguf"))
    for i, edit in enumerate([lambda c: c.update(max_position_embeddings=10**10),
                              lambda c: c.update(num_hidden_layers=10**9),
                              lambda c: c.update(num_hidden_layers=100_000)]):
        (tmp_path / f"h{i}").mkdir()
        crafted.append(str(dir_with(tmp_path / f"h{i}", honest_dir, edit)))
    root = Path(__file__).parents[2]

    def cap():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))   # keep a broken loader small
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(honest), *crafted], cwd=root,
                          capture_output=True, text=True, timeout=300, preexec_fn=cap)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    base = out.pop("honest")
    for path, (what, seconds, peak_mb) in out.items():
        assert seconds < SECONDS, (path, what, seconds)
        assert peak_mb - base < 300, (path, what, peak_mb - base)
    assert [out[p][0] for p in crafted] == ["accepted"] + ["ModelLoadError"] * 3 + \
        ["accepted"] + ["ModelLoadError"] * 2
