"""`--speculate` settings: which proposer speculative decoding uses, and how many tokens ahead.

Spellings (CLI `--speculate`, `EngineConfig.speculate`, the Chat settings):
    off                   no speculation (the default)
    ngram:K               prompt lookup: the K tokens that followed the latest earlier match of
                          the sequence's last n-gram in its own ids (vLLM's `ngram`,
                          transformers' prompt-lookup decoding); no second model
    draft:PATH:K          a smaller model with the same vocabulary (a .gguf file or a Hugging
                          Face folder) proposes K tokens, with its own paged KV cache
    draft:layers=L:K      self-speculation: the target's own first L layers plus its final norm
                          and head propose (LayerSkip / Draft-and-Verify style); L must be below
                          the target's layer count (the draft is never the full target)
`parse_speculate(text) -> SpecConfig` checks the syntax and K; a bad spelling is a ValueError of
one line naming the setting. The draft's file is loaded by the engine (model/engine/
draft_runner.py), L is checked against the model there. This module imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

# Proposals per step at most: a verify row of K + 1 tokens stays a decode-kernel row
# (kernels/paged_decode.py keeps all K + 1 tokens of a KV group in one query tile).
MAX_K = 16
FORMS = "off | ngram:K | draft:PATH:K | draft:layers=L:K"


@dataclass(frozen=True)
class SpecConfig:
    """One `--speculate` setting, parsed. `method` is "off", "ngram" or "draft"."""
    method: str = "off"
    k: int = 0                      # tokens proposed per step (0 when off)
    draft_path: str | None = None   # draft:PATH:K
    draft_layers: int | None = None  # draft:layers=L:K
    # Prompt lookup: the longest and shortest suffix n-gram tried. Longer matches are likelier
    # to continue the same way; a one-token match rarely does (on the CPU a failed verify of
    # K + 1 = 5 tokens costs ~0.8 of a decode step, benchmarks/README.md), so at least 2, as
    # transformers' prompt-lookup decoding (max_matching_ngram_size=2) and vLLM users set it.
    ngram_max: int = 4
    ngram_min: int = 2

    @property
    def enabled(self) -> bool:
        """Whether any proposer is on."""
        return self.method != "off"

    @property
    def uses_draft_model(self) -> bool:
        """Whether a draft network runs on the runner (draft:PATH:K or draft:layers=L:K)."""
        return self.method == "draft"

    def __str__(self) -> str:
        if self.method == "off":
            return "off"
        if self.method == "ngram":
            return f"ngram:{self.k}"
        if self.draft_layers is not None:
            return f"draft:layers={self.draft_layers}:{self.k}"
        return f"draft:{self.draft_path}:{self.k}"


def _k(text: str, spec: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise ValueError(f"speculate {spec!r}: K must be an integer, got {text!r} "
                         f"(forms: {FORMS})") from None
    if not 1 <= k <= MAX_K:
        raise ValueError(f"speculate {spec!r}: K must be between 1 and {MAX_K}, got {k}")
    return k


def parse_speculate(spec: str | SpecConfig | None) -> SpecConfig:
    """The SpecConfig `spec` names (None and "off" are off); ValueError of one line otherwise."""
    if isinstance(spec, SpecConfig):
        return spec
    if spec is None:
        return SpecConfig()
    if not isinstance(spec, str):
        raise ValueError(f"speculate must be a str such as 'ngram:4', got {spec!r:.40}")
    text = spec.strip()
    if text in ("", "off", "none"):
        return SpecConfig()
    method, _, rest = text.partition(":")
    if method == "ngram":
        return SpecConfig("ngram", _k(rest, spec))
    if method == "draft":
        head, sep, k = rest.rpartition(":")
        if not sep or not head:
            raise ValueError(f"speculate {spec!r}: draft needs a model and K, "
                             f"draft:PATH:K or draft:layers=L:K")
        if head.startswith("layers="):
            try:
                layers = int(head[len("layers="):])
            except ValueError:
                raise ValueError(f"speculate {spec!r}: layers=L needs an integer L") from None
            if layers < 1:
                raise ValueError(f"speculate {spec!r}: layers=L needs L >= 1, got {layers}")
            return SpecConfig("draft", _k(k, spec), draft_layers=layers)
        return SpecConfig("draft", _k(k, spec), draft_path=head)
    raise ValueError(f"speculate {spec!r}: unknown method {method!r} (forms: {FORMS})")
