"""Set our trained BPE beside SentencePiece BPE and tiktoken's cl100k_base / o200k_base.

`compare(files, vocab_size, pattern)` holds out every 20th line (5%) for evaluation, trains ours
and SentencePiece on the rest with the same vocab size and thread count, and measures for every
tokenizer: training time, held-out bytes per token, single-process encode MB/s, vocabulary
overlap with ours, and the segmentation of a sample line (pieces of whole characters, with the
line's token count). It returns plain data (`--json`);
`render(result)` draws it with rich.

Fairness rules: every tokenizer encodes the same held-out lines, each without its newline (the
unit SentencePiece trains on), one line per call, in one thread. SentencePiece runs as
model_type=bpe, byte_fallback, character_coverage 1.0, identity normalization, no whitespace
folding, no dummy prefix, whitespace-only pieces allowed, max_sentence_length >= the longest line,
every line used (input_sentence_size 0), no BOS/EOS. Its vocab size counts its 256 byte pieces
and <unk>, as ours counts our 256 byte tokens. This module does not read files beyond the
corpus and does not save tokenizers.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

HOLDOUT_EVERY = 20  # every 20th line (5%) is held out for evaluation
SAMPLE_CHARS = 240


def split_holdout(texts, train_path: Path) -> tuple[list[str], int]:
    """Write training lines to `train_path`; return (held-out lines without '\\n', longest line)."""
    held: list[str] = []
    longest = 0
    with open(train_path, "w", encoding="utf-8", newline="") as sink:
        n = 0
        for chunk in texts:
            for line in chunk.splitlines(keepends=True):
                longest = max(longest, len(line.encode("utf-8")))
                if n % HOLDOUT_EVERY == HOLDOUT_EVERY - 1:
                    stripped = line.rstrip("\r\n")
                    if stripped:
                        held.append(stripped)
                else:
                    sink.write(line)
                n += 1
    return held, longest


def train_sentencepiece(train_path: Path, vocab_size: int, longest_line: int, threads: int,
                        model_dir: Path):
    """Train a byte-fallback SentencePiece BPE on `train_path`: (processor, seconds)."""
    import sentencepiece as spm
    prefix = str(model_dir / "sp")
    start = time.perf_counter()
    spm.SentencePieceTrainer.train(
        input=str(train_path), model_prefix=prefix, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, allow_whitespace_only_pieces=True,
        max_sentence_length=max(4192, longest_line + 1), input_sentence_size=0,
        bos_id=-1, eos_id=-1, unk_id=0, num_threads=threads, minloglevel=2,
        split_digits=False)
    seconds = time.perf_counter() - start
    return spm.SentencePieceProcessor(model_file=prefix + ".model"), seconds


def sentencepiece_vocab(sp) -> set[bytes]:
    """A SentencePiece vocabulary as the set of byte strings it stands for."""
    out: set[bytes] = set()
    for i in range(sp.get_piece_size()):
        if sp.is_unknown(i) or sp.is_control(i):
            continue
        piece = sp.id_to_piece(i)
        if sp.is_byte(i):
            out.add(bytes([int(piece[3:5], 16)]))
        else:
            out.add(piece.replace("\u2581", " ").encode("utf-8"))
    return out


def measure(encode_line, lines: list[str]) -> dict:
    """Held-out bytes per token and encode MB/s of `encode_line` over `lines`."""
    total_bytes = sum(len(s.encode("utf-8")) for s in lines)
    start = time.perf_counter()
    tokens = 0
    for line in lines:
        tokens += len(encode_line(line))
    seconds = time.perf_counter() - start
    return {"bytes_per_token": round(total_bytes / max(1, tokens), 4),
            "encode_mb_s": round(total_bytes / 1e6 / max(seconds, 1e-9), 3),
            "heldout_tokens": tokens}


def whole_char_pieces(ids, id_to_bytes) -> list[str]:
    """Token texts for display: a token that ends inside a UTF-8 character is joined with the
    next ones until the character is complete (an emoji split over 3 byte tokens shows once,
    not as three U+FFFD). Invalid bytes still show as U+FFFD."""
    pieces, buf = [], b""
    for i in ids:
        buf += id_to_bytes(i)
        try:
            pieces.append(buf.decode("utf-8"))
        except UnicodeDecodeError as err:
            if err.reason == "unexpected end of data" and len(buf) < 16:
                continue                 # the character goes on in the next token
            pieces.append(buf.decode("utf-8", "replace"))
        buf = b""
    if buf:
        pieces.append(buf.decode("utf-8", "replace"))
    return pieces


def compare(files, vocab_size: int, pattern: str = "cl100k", threads: int | None = None,
            progress=None, references=("cl100k_base", "o200k_base")) -> dict:
    """Run the comparison (see the module docstring) and return its data."""
    from llm_playground import bpe
    from llm_playground.bpe.cli_io import iter_texts
    threads = threads or min(os.cpu_count() or 1, 8)
    say = progress or (lambda msg: None)
    rows: list[dict] = []
    samples: dict[str, list[str]] = {}       # display pieces: whole characters
    sample_tokens: dict[str, int] = {}       # tokens of the sample line
    with tempfile.TemporaryDirectory() as tmp:
        train_path = Path(tmp) / "train.txt"
        held, longest = split_holdout(iter_texts([Path(f) for f in files]), train_path)
        if not held:
            raise ValueError("the corpus has too few lines to hold out 5% for evaluation "
                             f"(need at least {HOLDOUT_EVERY} lines)")
        sample = max(held[:200], key=len)
        train_bytes = train_path.stat().st_size

        say("training ours ...")
        start = time.perf_counter()
        ours = bpe.train([str(train_path)], vocab_size, pattern=pattern, num_workers=threads)
        ours_seconds = time.perf_counter() - start
        ours_vocab = set(ours.vocab.values())

        def segment(name, tok):
            """Encode the sample with `tok`, recording its pieces and token count under `name`."""
            ids = tok.encode_ordinary(sample[:SAMPLE_CHARS])
            samples[name] = whole_char_pieces(ids, lambda i: tok.decode_bytes([i]))
            sample_tokens[name] = len(ids)

        rows.append({"name": "ours", "vocab_size": ours.vocab_size,
                     "train_seconds": round(ours_seconds, 3),
                     **measure(ours.encode_ordinary, held), "vocab_overlap": 1.0})
        segment("ours", ours)

        say("training SentencePiece ...")
        try:
            sp, sp_seconds = train_sentencepiece(train_path, vocab_size, longest, threads,
                                                 Path(tmp))
            sp_vocab = sentencepiece_vocab(sp)
            rows.append({"name": "sentencepiece", "vocab_size": sp.get_piece_size(),
                         "train_seconds": round(sp_seconds, 3),
                         **measure(lambda s: sp.encode(s, num_threads=1), held),
                         "vocab_overlap": round(len(sp_vocab & ours_vocab) / len(ours_vocab), 4)})
            samples["sentencepiece"] = [p.replace("\u2581", " ") for p in
                                        sp.encode(sample[:SAMPLE_CHARS], out_type=str)]
            sample_tokens["sentencepiece"] = len(samples["sentencepiece"])
        except RuntimeError as e:
            rows.append({"name": "sentencepiece", "error": str(e).splitlines()[0][:200]})

        from llm_playground.bpe.reference import load_reference
        for name in references:
            say(f"measuring {name} ...")
            ref_tok, encoding = load_reference(name)
            ref_vocab = set(ref_tok.vocab.values())
            rows.append({"name": f"tiktoken {name}", "vocab_size": encoding.n_vocab,
                         "train_seconds": None, **measure(encoding.encode_ordinary, held),
                         "vocab_overlap": round(len(ref_vocab & ours_vocab) / len(ours_vocab), 4)})
            segment(name, ref_tok)
    return {"corpus": {"files": [str(f) for f in files], "train_bytes": train_bytes,
                       "heldout_lines": len(held),
                       "heldout_bytes": sum(len(s.encode("utf-8")) for s in held)},
            "vocab_size": vocab_size, "pattern": pattern, "threads": threads,
            "rows": rows, "sample": sample[:SAMPLE_CHARS], "segmentations": samples,
            "sample_tokens": sample_tokens}


def render(result: dict, separator: str | None = None):
    """Rich renderables: the table and each tokenizer's segmentation of the sample line, one
    background colour per token, neighbours always different (bpe/token_colours.py); with a
    `separator` (for output that shows no colour) also that mark between tokens."""
    from rich.console import Group
    from rich.table import Table
    from llm_playground.bpe.token_colours import boundary_text
    table = Table(title=f"vocab {result['vocab_size']}, pattern {result['pattern']}, "
                        f"{result['threads']} threads, held-out "
                        f"{result['corpus']['heldout_bytes']:,} bytes")
    for col in ("tokenizer", "vocab", "train s", "bytes/token", "encode MB/s", "overlap w/ ours"):
        table.add_column(col, justify="left" if col == "tokenizer" else "right")
    for row in result["rows"]:
        if "error" in row:
            table.add_row(row["name"], "-", "-", "-", "-", f"[red]{row['error'][:40]}[/]")
            continue
        train = "-" if row["train_seconds"] is None else f"{row['train_seconds']:.2f}"
        table.add_row(row["name"], f"{row['vocab_size']:,}", train,
                      f"{row['bytes_per_token']:.3f}", f"{row['encode_mb_s']:.2f}",
                      f"{100 * row['vocab_overlap']:.1f}%")
    parts = [table]
    for name, pieces in result["segmentations"].items():
        count = result.get("sample_tokens", {}).get(name, len(pieces))
        parts.append(boundary_text(pieces, separator, prefix=f"{name} ({count} tokens): "))
    return Group(*parts)
