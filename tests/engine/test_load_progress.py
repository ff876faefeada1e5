"""Loading a GGUF model: the file is parsed once, and the weights report real progress.

Found as a newcomer (issue 22): the GGUF header was parsed twice (once for the tokenizer, once
for the weights; about 2.3 CPU-s each for the default model), and the UI's loading bar was
indeterminate. Oracles: a spy on the gguf package's reader (how many times a header is parsed),
a second, independent load of the same file (tokenizer ids and weights equal), the count of
tensors the network needs (weight_contract.expected_shapes) and of matrices int8 quantizes.
"""
from __future__ import annotations

import gguf
import pytest
import torch

from llm_playground.model.network.linear import int8_supported
from llm_playground.model.network.weight_contract import expected_shapes
from llm_playground.model.weights import gguf_file
from llm_playground.model.weights.loader import build_model, load_model
from tiny_gguf import tiny_gguf_config, write_tiny_gguf


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def tiny(request, tmp_path_factory):
    """(path of a tiny GGUF, whether its head is tied to the embedding)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tied=request.param), \
        request.param


@pytest.fixture
def parse_count(monkeypatch):
    calls = []
    real_init = gguf.GGUFReader.__init__

    def counting_init(self, path, *a, **k):
        calls.append(str(path))
        real_init(self, path, *a, **k)

    monkeypatch.setattr(gguf.GGUFReader, "__init__", counting_init)
    return calls


def test_gguf_header_parsed_once_for_config_weights_and_tokenizer(tiny, parse_count):
    tiny_path, _ = tiny
    loaded = load_model(tiny_path, "float32", device="cpu")
    assert parse_count == [str(tiny_path)]
    # the same tokenizer and weights as reading the file separately, the old way
    from llm_playground.bpe.formats.gguf import read_gguf_tokenizer
    alone, meta = read_gguf_tokenizer(tiny_path)
    text = "abcab cab <s>x</s>"
    assert (loaded.tokenizer.encode(text, allowed_special="all")
            == alone.encode(text, allowed_special="all"))
    assert loaded.chat_template == meta["chat_template"]
    reader = gguf_file.open_gguf(tiny_path)
    cfg = gguf_file.read_gguf_config(reader, tiny_path)
    _, get = gguf_file.open_gguf_weights(reader, cfg, tiny_path)
    ref = build_model(cfg, get, "float32", torch.float32, torch.device("cpu"))
    for (name, a), (_, b) in zip(loaded.model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_weights_fraction_rises_to_one(tiny, fmt):
    tiny_path, tied = tiny
    if fmt == "int8" and not int8_supported():
        pytest.skip("this torch has no CPU int8 matmul")
    seen: list[float] = []
    load_model(tiny_path, fmt, device="cpu", fraction=seen.append)
    cfg = tiny_gguf_config(tied)
    tensors = len(expected_shapes(cfg))
    matrices = 4 * cfg.num_layers + 1 if fmt == "int8" else 0     # q|k|v, o, gate|up, down; head
    assert len(seen) == tensors + matrices
    assert all(0.0 < f <= 1.0 for f in seen)
    assert all(b > a for a, b in zip(seen, seen[1:]))              # rises with every step
    assert seen[-1] == 1.0
    if fmt == "int8":          # reading is one phase, quantizing the other: neither reaches 1 alone
        assert 0.3 < seen[tensors - 1] < 0.7


def test_engine_worker_turns_the_fraction_into_percent_messages(tiny):
    """The UI's seam: real_factory loads through load_model, and the EngineWorker's progress
    callback posts LoadProgress messages whose fraction the loading bar shows."""
    from llm_playground.playground.cli import build_parser
    from llm_playground.playground.engine_factory import real_factory
    from llm_playground.playground.engine_worker import EngineWorker
    from llm_playground.playground.messages import LoadProgress
    tiny_path, _ = tiny
    posted = []
    args = build_parser().parse_args(["--model", str(tiny_path), "--dtype", "float32", "--device", "cpu",
                                      "--kv-blocks", "32"])
    factory = real_factory(args)
    worker = EngineWorker(posted.append, factory)
    info, engine = factory(worker._load_progress)
    assert info.name == "tiny-gguf" and engine is not None
    weights = [m.fraction for m in posted if isinstance(m, LoadProgress)
               and m.stage == "loading the weights"]
    assert len(weights) == len(expected_shapes(engine.loaded.config))
    assert all(b > a for a, b in zip(weights, weights[1:])) and weights[-1] == 1.0
    stages = [m.stage for m in posted if isinstance(m, LoadProgress) and m.fraction is None]
    assert stages[0] == "loading the model" and stages[-1] == "allocating the KV cache"
    assert any(s.startswith("reading ") for s in stages)
