"""Device choice: no --device means CUDA where torch sees a GPU, else the CPU, and the header says
which was chosen and how; `--device cuda` on a machine without CUDA is one line saying there is
none and what to pass, before any model is fetched or read (not torch's "Torch not compiled
with CUDA enabled"). CUDA's presence is simulated by patching torch.cuda's queries, so these run
the same on a CPU machine and on a GPU one; nothing is allocated on a GPU here."""
from __future__ import annotations

import pytest
import torch

from llm_playground.model.network.weight_contract import ModelLoadError
from llm_playground.model.weights import loader
from llm_playground.model.weights.loader import load_model, resolve_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_default_is_cuda_where_available(two_gpus):
    assert resolve_device(None) == (torch.device("cuda", 0), "auto")
    assert resolve_device("auto") == (torch.device("cuda", 0), "auto")
    assert resolve_device("cuda") == (torch.device("cuda", 0), "")       # named: no note
    assert resolve_device("cuda:1") == (torch.device("cuda", 1), "")


def test_default_is_the_cpu_without_cuda(no_cuda, tmp_path):
    assert resolve_device(None) == (torch.device("cpu"), "auto, no CUDA device")
    assert resolve_device("cpu") == (torch.device("cpu"), "")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_says_what_to_pass(no_cuda, spec, monkeypatch):
    fetched = []
    monkeypatch.setattr("llm_playground.model.weights.default_model.ensure_default_model",
                        lambda *a, **k: fetched.append(1))
    with pytest.raises(ModelLoadError) as info:
        load_model(None, device=spec)           # the default model: never fetched for a bad device
    msg = str(info.value)
    assert "\n" not in msg and "no CUDA device" in msg and "--device cpu" in msg
    assert "not compiled" not in msg and not fetched


def test_a_cuda_index_past_the_last_gpu(two_gpus):
    with pytest.raises(ModelLoadError, match=r"'cuda:2': this machine has 2 CUDA devices \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec,says", [("banana", "unknown device 'banana'"),
                                       ("mps", "device 'mps' is not supported"),
                                       ("meta", "device 'meta' is not supported")])
def test_other_devices_are_refused(spec, says):
    with pytest.raises(ModelLoadError, match=says):
        resolve_device(spec)


def test_playground_cli_device_cuda_is_one_line(no_cuda, capsys):
    from llm_playground.playground import cli
    assert cli.main(["--device", "cuda", "generate", "--prompt", "hi", "--max-tokens", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()       # a stage line may come first
    errors = [line for line in err if line.startswith("playground: error: ")]
    assert errors == err[-1:] and "no CUDA device" in err[-1] and "Traceback" not in "".join(err)


def test_the_header_says_which_device_was_chosen(no_cuda, tmp_path):
    """The app's model line comes from describe(): the device and, when it was picked
    automatically, how. Oracle for the device: the loaded model's parameters."""
    from pathlib import Path

    from llm_playground import bpe
    from llm_playground.model.engine.config import EngineConfig
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.network.config import ModelConfig
    from llm_playground.model.network.llama import LlamaForCausalLM
    from llm_playground.model.network.weight_contract import expected_shapes
    from llm_playground.playground.engine_factory import describe
    cfg = ModelConfig(vocab_size=256, hidden_size=16, intermediate_size=24, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=8, max_position=64)
    model = LlamaForCausalLM(cfg)
    model.load_weights(lambda n: torch.ones(expected_shapes(cfg)[n]))
    tok = bpe.Tokenizer(bpe.patterns.GPT2, {i: bytes([i]) for i in range(256)}, None, {})
    loaded = loader.LoadedModel(model=model, config=cfg, tokenizer=tok, chat_template=None,
                                name="t", path=Path("t"), dtype=torch.float32,
                                device=torch.device("cpu"), weight_format="float32")
    dev, choice = resolve_device(None)
    loaded.device_choice = choice
    info = describe(Engine(loaded, EngineConfig(num_blocks=16, block_size=4)), loaded)
    assert info.device == f"{loaded.model.embed_tokens.device} (auto, no CUDA device)"
    loaded.device_choice = ""
    assert describe(Engine(loaded, EngineConfig(num_blocks=16, block_size=4)), loaded).device == "cpu"


def test_engine_config_leaves_the_choice_to_the_loader():
    from llm_playground.model.engine.config import EngineConfig
    assert EngineConfig().device is None and loader.load_model.__defaults__[1] is None
