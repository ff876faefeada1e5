"""llm_playground: the one import package of this project.

Its four parts are subpackages, one per folder under llm_playground/:

    llm_playground.bpe         byte-level BPE: train, encode, decode, compare (no torch)
    llm_playground.kernels     Triton kernels and their torch references
    llm_playground.model       the network, its weights and the serving engine (three rooms)
    llm_playground.playground  the Textual app and the `playground` CLI

Why one package: top-level names such as `kernels` or `model` are also provided by other
distributions (transformers imports Hugging Face's `kernels`); ours shadowed theirs whenever the
repository root was on sys.path. Nothing here is importable as a bare top-level `kernels`,
`model`, `bpe` or `playground`. This module imports nothing.
"""
__version__ = "0.1.0"
