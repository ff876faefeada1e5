"""The tokenizers the Tokenizers tab compares, behind one small interface.

`TokenizerEntry` holds what the view needs: encode text to ids, the bytes of an id, and (for our
BPE) the merge tree of an id. Sources: any `bpe.Tokenizer` (the model's, cl100k_base and
o200k_base through our encoder, ones the user trained) and SentencePiece `.model` files through
the sentencepiece library. Training goes through `bpe.train`; file checks happen before a worker
starts, so an unreadable corpus is a one-line message, not a traceback.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class TokenizerEntry:
    """One tokenizer as the Tokenizers tab uses it: name, kind, encode, id -> bytes, merge tree."""
    name: str
    kind: str                                   # "model" / "reference" / "trained" / "sentencepiece"
    encode: Callable[[str], list[int]]
    id_to_bytes: Callable[[int], bytes]
    merge_tree: Callable[[int], Any] | None = None
    vocab_size: int = 0


def from_bpe(tok: Any, name: str, kind: str) -> TokenizerEntry:
    """User text is encoded as ordinary text: special-token strings are not matched."""
    return TokenizerEntry(name, kind, tok.encode_ordinary, tok.id_to_bytes,
                          getattr(tok, "merge_tree", None), tok.vocab_size)


def load_reference(name: str) -> TokenizerEntry:
    """The reference tokenizer `name` (cl100k_base, o200k_base) as an entry."""
    from llm_playground import bpe
    return from_bpe(bpe.load(name), name, "reference")


def from_sentencepiece(path: str) -> TokenizerEntry:
    """The SentencePiece .model file at `path` as an entry; ValueError when it cannot be read."""
    path = os.path.expanduser(path.strip())
    if not os.path.isfile(path):
        raise ValueError(f"no file at {path!r}: give the path of a SentencePiece .model file")
    import sentencepiece as spm
    try:
        sp = spm.SentencePieceProcessor(model_file=path)
    except Exception as error:
        raise ValueError(f"{path!r} is not a SentencePiece model ({str(error).splitlines()[0]})") from None

    def id_to_bytes(i: int) -> bytes:
        """The bytes of piece `i` (a byte piece its byte; control and unknown pieces b"")."""
        piece = sp.id_to_piece(i)
        if sp.is_byte(i):                        # "<0x0A>"
            return bytes([int(piece[3:5], 16)])
        if sp.is_control(i) or sp.is_unknown(i):
            return b""
        return piece.replace("\u2581", " ").encode("utf-8")

    name = os.path.basename(path)
    return TokenizerEntry(name, "sentencepiece", lambda text: sp.encode(text, out_type=int),
                          id_to_bytes, None, sp.get_piece_size())


def expand_corpus(spec: str) -> list[str]:
    """Comma-separated paths or globs -> readable files; ValueError says which one is wrong."""
    files: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        matches = sorted(glob.glob(os.path.expanduser(part))) or [os.path.expanduser(part)]
        for path in matches:
            if os.path.isdir(path):
                raise ValueError(f"{path!r} is a folder: pick text files (a glob like {path}/*.txt works)")
            try:
                with open(path, "rb") as f:
                    f.read(1)
            except OSError as error:
                raise ValueError(f"cannot read {path!r} ({error.strerror or error}): pick a readable text file") from None
            files.append(path)
    if not files:
        raise ValueError("no corpus files given: type one or more paths or globs, comma separated")
    return files


def start_process_helpers() -> bool:
    """Start multiprocessing's resource tracker now, while sys.stderr is a real file. Under
    Textual, sys.stderr is a capture object whose fileno() is -1, and starting the tracker from
    there fails ("bad value(s) in fds_to_keep"), so the app calls this before it runs. False
    when it cannot be started (the caller then counts in this process)."""
    from multiprocessing import resource_tracker
    try:
        resource_tracker.ensure_running()       # a no-op once it runs
        return True
    except (ValueError, OSError):
        return False


def train(files: list[str], vocab_size: int, progress: Callable[..., None] | None = None) -> Any:
    """Train a BPE tokenizer of `vocab_size` on `files` (ValueError below 257)."""
    from llm_playground import bpe
    if vocab_size < 257:
        raise ValueError("vocab size must be at least 257 (256 bytes + one merge)")
    workers = None if start_process_helpers() else 1   # 1: no worker processes
    return bpe.train(files, vocab_size, progress=progress, name=f"trained-{vocab_size}",
                     num_workers=workers)
