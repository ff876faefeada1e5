"""Models to load in every rank or replica: a file path or random weights of any shape.

`ModelSource` is plain, picklable data that a spawned process turns into a LoadedModel
(weights/loader.py's dataclass) on its own device: either a path (None: the default model) with
a weight format, or random weights (`random=` ModelConfig fields, `seed`, `scale`), the same
tensors in every process, generated tensor by tensor from the seed (so a Llama-3-8B-shaped model
never needs a file, and its peak memory is the model plus one tensor; on CUDA the tensors come
from a CUDA generator, so they are the same on every GPU but not the same as the CPU's). Random models get a
byte-level tokenizer (ids 0..255 are bytes) when the vocabulary has room, else none. This module
does not shard (tp_shard.py) or build engines.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from llm_playground.model.network.config import ModelConfig


@dataclass(frozen=True)
class ModelSource:
    """Where a process gets its model: `path` (None = the default model) or `random` weights."""
    path: str | None = None
    dtype: str | None = None          # weight format (loader.WEIGHT_FORMATS); None = device default
    random: dict | None = None        # ModelConfig fields: random weights of that shape
    seed: int = 0                     # random weights: the generator's seed
    scale: float = 0.5                # random weights: N(0, scale) entries; norms N(1, scale)

    def __post_init__(self) -> None:
        if self.path is not None and self.random is not None:
            raise ValueError("ModelSource: give a path or random weights, not both")

    def load(self, device: str | torch.device, float_weights: bool = False):
        """The LoadedModel on `device`. float_weights: an int8 format loads as bfloat16 (the
        caller quantises after sharding); returns (loaded, weight format asked for)."""
        from llm_playground.model.weights import loader
        dev = torch.device(device)
        fmt, act = loader.resolve_dtype(self.dtype, dev)
        build_fmt = "bfloat16" if (float_weights and fmt == "int8") else fmt
        if self.random is None:
            loaded = loader.load_model(self.path, build_fmt, str(dev))
            return loaded, fmt
        cfg = ModelConfig(**self.random)
        model = loader.build_model(cfg, random_weights(cfg, self.seed, self.scale, dev),
                                   build_fmt, act, dev)
        loaded = loader.LoadedModel(model=model, config=cfg, tokenizer=_byte_tokenizer(cfg),
                                    chat_template=None, name="random", path=Path("random"),
                                    dtype=act, device=dev, weight_format=build_fmt)
        return loaded, fmt


def random_weights(cfg: ModelConfig, seed: int, scale: float, device: torch.device):
    """get(name) -> the tensor `name` of a random model: each tensor from its own generator
    (seed, index of the name), so every process draws the same values, one tensor at a time."""
    from llm_playground.model.network.weight_contract import expected_shapes
    shapes = expected_shapes(cfg)
    index = {n: i for i, n in enumerate(shapes)}
    gen_device = device if device.type == "cuda" else torch.device("cpu")

    def get(name: str) -> torch.Tensor:
        """Tensor `name`, float32, on `device`."""
        g = torch.Generator(device=gen_device).manual_seed(seed * 1_000_003 + index[name])
        t = torch.randn(shapes[name], generator=g, device=gen_device) * scale
        if "norm" in name:
            t += 1.0
        return t.to(device)

    return get


def _byte_tokenizer(cfg: ModelConfig):
    """Ids 0..255 as bytes (the rest unnamed) when the vocabulary has at least 256 ids."""
    if cfg.vocab_size < 256:
        return None
    from llm_playground import bpe
    vocab = {i: bytes([i]) for i in range(256)}
    vocab.update({i: f"<{i}>".encode() for i in range(256, cfg.vocab_size)})
    return bpe.Tokenizer(bpe.patterns.GPT2, vocab, None, {}, name="bytes")
