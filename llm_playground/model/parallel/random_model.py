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
    dtype: str | None = None          # --dtype (loader.WEIGHT_FORMATS: int8 the old spelling)
    weights: str | None = None        # --weights (loader.WEIGHTS); None = the loader's default
    group_size: int | None = None     # --group-size (int8 / int4)
    random: dict | None = None        # ModelConfig fields: random weights of that shape
    seed: int = 0                     # random weights: the generator's seed
    scale: float = 0.5                # random weights: N(0, scale) entries; norms N(1, scale)

    def __post_init__(self) -> None:
        if self.path is not None and self.random is not None:
            raise ValueError("ModelSource: give a path or random weights, not both")

    def weight_format(self, device: str | torch.device) -> str:
        """The weight format --dtype / --weights resolve to on `device` (loader.resolve_weights:
        a float dtype name, int8, int4 or native)."""
        from llm_playground.model.weights import loader
        return loader.resolve_weights(self.dtype, self.weights, torch.device(device))[0]

    def load(self, device: str | torch.device, float_weights: bool = False):
        """The LoadedModel on `device`. float_weights: int8 / int4 formats load as float weights
        of the compute dtype (the caller quantises after sharding); returns (loaded, weight
        format asked for)."""
        from llm_playground.model.weights import loader
        dev = torch.device(device)
        fmt, act, _ = loader.resolve_weights(self.dtype, self.weights, dev)
        as_float = float_weights and fmt in ("int8", "int4")
        build_fmt = str(act).removeprefix("torch.") if as_float else fmt
        if self.random is None:
            if as_float:
                loaded = loader.load_model(self.path, build_fmt, str(dev), weights="float")
            else:
                loaded = loader.load_model(self.path, self.dtype, str(dev), weights=self.weights,
                                           group_size=self.group_size)
            return loaded, fmt
        cfg = ModelConfig(**self.random)
        model = loader.build_model(cfg, random_weights(cfg, self.seed, self.scale, dev),
                                   build_fmt, act, dev, group_size=None if as_float else self.group_size)
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
