"""Count the pre-tokens of a training corpus without holding the corpus in memory.

Inputs: paths, directories (every regular file below, sorted, hidden names skipped), glob
patterns (a glob after a folder applies inside it; each file counted once: bpe/corpus_files.py),
or an iterable of str documents (a str / PathLike, or a list or tuple of them, is
read as paths; any other iterable, e.g. a generator or `iter(texts)`, as documents). Files are read in blocks of about `block_bytes` that
end at a newline, so memory holds one block per process plus the counts of distinct pieces.
A block is split on special-token text (never learned as merges), then with the pattern regex,
and counted with `collections.Counter`. Large file corpora are counted by `num_workers`
processes, each reading its own byte ranges. The result (`PretokenCounts`) also says how much of
the text the pattern matched: text it does not match is dropped by encoding, so `bpe.train`
refuses a pattern that leaves some (`chars`, `matched`, and the first `gap` as an example).

Cutting at newlines changes pre-tokenization only where a whitespace run spans a block edge
(one run in every ~1 MB). Invalid UTF-8: `invalid_utf8="error"` (default) raises CorpusError
naming the file and byte offset; `"replace"` decodes with U+FFFD and reports the count of bad
spans through `warn`. This module does not merge anything (see `bpe.train`).
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import regex

from llm_playground.bpe import patterns
from llm_playground.bpe.corpus_files import CorpusError, expand_inputs

BLOCK_BYTES = 1 << 20  # read unit: big enough for regex throughput, small for memory
MAX_LINE_BYTES = 64 << 20  # a block without newline is cut (at a UTF-8 boundary) past this
PARALLEL_MIN_BYTES = 8 << 20  # below this, extra processes cost more than they save
DOC_BATCH_CHARS = 1 << 20  # iterable input: documents counted per batch
GAP_CHARS = 24  # unmatched text kept as an example for the error message


class PretokenCounts(Counter):
    """Counts of pre-tokens, and how much of the text the pattern covered."""
    chars: int = 0              # characters the pattern was applied to (special tokens excluded)
    gap: str | None = None      # the first text the pattern did not match (an example), if any

    @property
    def matched(self) -> int:
        """Characters inside the counted pieces (== chars when the pattern matches all text)."""
        return sum(len(piece) * n for piece, n in self.items())

    def add(self, pieces, chars: int, gap: str | None) -> None:
        """Count `pieces` (a Counter or a list), cut from `chars` characters."""
        self.update(pieces)
        self.chars += chars
        if self.gap is None:
            self.gap = gap


@dataclass(frozen=True)
class Block:
    """A byte range [start, end) of one corpus file, counted as one unit of work."""
    path: str
    start: int
    end: int


def _next_cut(f, pos: int, size: int) -> int:
    """First offset after `pos` that follows a newline (or EOF / a forced UTF-8-safe cut)."""
    f.seek(pos)
    scanned = 0
    while scanned < MAX_LINE_BYTES:
        chunk = f.read(1 << 16)
        if not chunk:
            return size
        nl = chunk.find(b"\n")
        if nl >= 0:
            return pos + scanned + nl + 1
        scanned += len(chunk)
    cut = pos + scanned
    f.seek(cut)
    tail = f.read(4)
    back = next((k for k, byte in enumerate(tail) if byte & 0xC0 != 0x80), 0)
    return cut + back


def plan_blocks(files: list[Path], block_bytes: int | None = None) -> list[Block]:
    """Byte ranges of about `block_bytes` (default BLOCK_BYTES) that end after a newline."""
    block_bytes = block_bytes or BLOCK_BYTES
    blocks = []
    for path in files:
        size = path.stat().st_size
        with open(path, "rb") as f:
            start = 0
            while start < size:
                end = size if start + block_bytes >= size else _next_cut(f, start + block_bytes, size)
                blocks.append(Block(str(path), start, end))
                start = end
    return blocks


def _splitter(pattern: str, special_tokens: tuple[str, ...]):
    """text -> (pieces, the text they were cut from: special-token text left out)."""
    findall = patterns.compiled(pattern).findall
    if not special_tokens:
        return lambda text: (findall(text), text)
    split_specials = regex.compile("|".join(regex.escape(t) for t in
                                            sorted(special_tokens, key=len, reverse=True))).split

    def split(text: str) -> tuple[list[str], str]:
        """text -> (pre-tokenized pieces, the text without its special tokens)."""
        out = []
        parts = split_specials(text)
        for part in parts:
            out.extend(findall(part))
        return out, "".join(parts)
    return split


def _gap(pieces: list[str], source: str) -> str | None:
    """The first text of `source` that `pieces` (the pattern's matches, in order) leave out, as
    an example for the error message; None when they cover all of it (the usual case)."""
    if sum(map(len, pieces)) == len(source):
        return None
    pos, end = 0, len(source)
    for piece in pieces:
        at = source.find(piece, pos)
        if at > pos:
            end = at
            break
        pos = at + len(piece)
    return source[pos:min(end, pos + GAP_CHARS)]


def count_block(block: Block, pattern: str, special_tokens: tuple[str, ...],
                invalid_utf8: str) -> tuple[Counter, int, int, str | None]:
    """Counts of one block, how many invalid UTF-8 spans were replaced in it, the characters
    the pattern was applied to and the first text it did not match (None: it matched all)."""
    with open(block.path, "rb") as f:
        f.seek(block.start)
        data = f.read(block.end - block.start)
    try:
        text = data.decode("utf-8")
        bad = 0
    except UnicodeDecodeError as exc:
        if invalid_utf8 != "replace":
            raise CorpusError(f"{block.path}: invalid UTF-8 at byte {block.start + exc.start} "
                              f"(a binary file? invalid_utf8='replace' would substitute U+FFFD)") from None
        text = data.decode("utf-8", "replace")
        bad = text.count("\ufffd") - data.count("\ufffd".encode())
    pieces, source = _splitter(pattern, special_tokens)(text)
    return Counter(pieces), bad, len(source), _gap(pieces, source)


def _count_block_star(args):
    return count_block(*args)


def _worker_init() -> None:
    """Pool workers leave interrupts to the parent: Ctrl-C (sent to the whole process group) is
    ignored here, and SIGTERM keeps its default (the parent's pool.terminate() ends workers with
    it), so an interrupted run prints no worker tracebacks and leaks no semaphores."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _pool_context():
    # fork is fast, but unsafe once other threads run (the UI calls train from a worker thread).
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def count_pretokens(inputs, pattern: str, special_tokens: tuple[str, ...] = (),
                    num_workers: int | None = None, invalid_utf8: str = "error",
                    warn: Callable[[str], None] | None = None) -> PretokenCounts:
    """Counter of pre-token strings over the whole corpus (files or an iterable of str)."""
    if invalid_utf8 not in ("error", "replace"):
        raise ValueError("invalid_utf8 must be 'error' or 'replace'")
    if isinstance(inputs, (str, os.PathLike)) or _is_path_list(inputs):
        return _count_files(expand_inputs(inputs), pattern, special_tokens, num_workers,
                            invalid_utf8, warn)
    return _count_documents(inputs, pattern, special_tokens)


def _is_path_list(inputs) -> bool:
    """A list/tuple of PathLike or short one-line str is a list of paths; any other iterable
    (a generator, `iter(texts)`, a list holding multi-line text) yields documents."""
    return isinstance(inputs, (list, tuple)) and bool(inputs) and all(
        isinstance(x, os.PathLike) or (isinstance(x, str) and "\n" not in x and len(x) < 4096)
        for x in inputs)


def _count_files(files, pattern, special_tokens, num_workers, invalid_utf8, warn) -> PretokenCounts:
    blocks = plan_blocks(files)
    total_bytes = sum(b.end - b.start for b in blocks)
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8) if total_bytes >= PARALLEL_MIN_BYTES else 1
    num_workers = max(1, min(num_workers, len(blocks) or 1))
    counts = PretokenCounts()
    bad_by_file: Counter = Counter()
    tasks = [(b, pattern, special_tokens, invalid_utf8) for b in blocks]
    if num_workers == 1:
        results = map(_count_block_star, tasks)
        for block, (c, bad, chars, gap) in zip(blocks, results):
            counts.add(c, chars, gap)
            bad_by_file[block.path] += bad
    else:
        with _pool_context().Pool(num_workers, initializer=_worker_init) as pool:
            for block, (c, bad, chars, gap) in zip(blocks, pool.imap(_count_block_star, tasks)):
                counts.add(c, chars, gap)
                bad_by_file[block.path] += bad
    for path, bad in sorted(bad_by_file.items()):
        if bad and warn is not None:
            warn(f"{path}: replaced {bad} invalid UTF-8 sequence(s) with U+FFFD")
    return counts


def _count_documents(docs: Iterable[str], pattern, special_tokens) -> PretokenCounts:
    split = _splitter(pattern, special_tokens)
    counts = PretokenCounts()
    for doc in docs:
        if not isinstance(doc, str):
            raise CorpusError(f"training documents must be str, got {type(doc).__name__}")
        pieces, source = split(doc)
        counts.add(pieces, len(source), _gap(pieces, source))
    return counts
