"""Input and output checks for the `bpe` command line: corpus files, text input, id input.

Policy (documented in `bpe --help`):
- A corpus argument is a file, a folder (every file below it, sorted, hidden names left out) or
  a glob; a glob right after a folder selects files inside that folder (`corpus/ "*.md"`), and
  a file named twice is read once (bpe/corpus_files.py). A missing path,
  a folder with no files, a file containing NUL bytes in its first 64 KiB ("binary"), or an empty
  corpus (zero bytes in all) is an error.
- Invalid UTF-8 in a corpus is an error naming the file, unless `--invalid-utf8 replace`, which
  decodes it as U+FFFD and prints one warning per file (bpe.train does both).
- Text to encode is read as bytes and decoded strictly; nothing is translated (`\r\n` stays).
- Ids to decode: whitespace-separated integers, a JSON list, or a JSON object with "ids".

Every problem raises `UserError` with a one-line message; the CLI prints it and exits 2.
This module does not tokenize.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

BINARY_SNIFF_BYTES = 1 << 16


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


UNICODE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def not_utf8_hint(head: bytes) -> str:
    """What to tell the user about bytes that are not UTF-8 text: a UTF-16/32 byte-order mark
    gets a conversion command, anything else is called binary."""
    for bom, encoding in UNICODE_BOMS:
        if head.startswith(bom):
            return (f"is {encoding} text (it starts with a byte-order mark); convert it first: "
                    f"iconv -f {encoding} -t UTF-8 FILE > FILE.utf8")
    return "looks like a binary file (it contains NUL bytes)"


def expand_inputs(args: list[str]) -> list[Path]:
    """Files, folders and globs -> each file once (bpe/corpus_files.py has the rule: a glob right
    after a folder selects files inside it); UserError when an argument names nothing."""
    from llm_playground.bpe.corpus_files import CorpusError, expand_inputs as expand
    try:
        return expand(args)
    except CorpusError as e:
        raise UserError(str(e)) from None


def check_corpus(files: list[Path]) -> int:
    """Check every corpus file for being readable, not binary and not all empty; return the
    total bytes. (Invalid UTF-8 is checked while training: bpe.train's invalid_utf8 option.)"""
    total = 0
    for path in files:
        try:
            with open(path, "rb") as f:
                head = f.read(BINARY_SNIFF_BYTES)
            total += path.stat().st_size
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror}") from None
        if b"\x00" in head or head.startswith((b"\xff\xfe", b"\xfe\xff")):
            hint = not_utf8_hint(head)
            raise UserError(f"{path} {hint}" + ("; pass text files only" if "binary" in hint else ""))
    if total == 0:
        raise UserError("the corpus is empty (0 bytes of text)")
    return total


def iter_texts(files: list[Path], errors: str = "strict", chunk_lines: int = 10_000) -> Iterator[str]:
    """The corpus as text chunks of up to `chunk_lines` lines ending in b"\\n", never the whole
    file at once. Invalid UTF-8 (with errors="strict") raises CorpusError naming the file and
    the byte offset."""
    for path in files:
        with open(path, "rb") as f:
            offset = 0
            lines: list[bytes] = []
            for line in f:
                lines.append(line)
                if len(lines) >= chunk_lines:
                    yield _decode_chunk(b"".join(lines), path, offset, errors)
                    offset += sum(map(len, lines))
                    lines = []
            if lines:
                yield _decode_chunk(b"".join(lines), path, offset, errors)


def _decode_chunk(data: bytes, path: Path, offset: int, errors: str) -> str:
    from llm_playground.bpe.counting import CorpusError
    try:
        return data.decode("utf-8", errors)
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: invalid UTF-8 at byte {offset + e.start} ({e.reason}); "
                          "convert it to UTF-8 or leave the file out") from None


def read_input_bytes(arg: str | None) -> bytes:
    """The bytes of FILE, or of stdin for None / '-'."""
    if arg in (None, "-"):
        return sys.stdin.buffer.read()
    path = Path(arg)
    if path.is_dir():
        raise UserError(f"{arg} is a folder, not a file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"no such file: {arg}") from None
    except OSError as e:
        raise UserError(f"cannot read {arg}: {e.strerror}") from None


def decode_text(data: bytes, source: str) -> str:
    """`data` as UTF-8 text; binary or invalid UTF-8 input raises UserError."""
    head = data[:BINARY_SNIFF_BYTES]
    if b"\x00" in head or head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"{source} {not_utf8_hint(head)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{source}: invalid UTF-8 at byte {e.start} ({e.reason}); bpe encode "
                        "takes UTF-8 text (convert it: iconv -f ENCODING -t UTF-8)") from None


def parse_ids(data: bytes, source: str) -> list[int]:
    """Token ids from whitespace-separated integers, a JSON list, or a JSON object with "ids"."""
    text = data.decode("utf-8", errors="replace").strip()
    if text.startswith(("[", "{")):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}: not valid JSON ({e.msg} at char {e.pos})") from None
        except RecursionError:
            raise UserError(f"{source}: JSON nested too deeply (ids are a flat list)") from None
        ids = doc.get("ids") if isinstance(doc, dict) else doc
        if not isinstance(ids, list) or not all(type(i) is int for i in ids):  # no bools
            raise UserError(f"{source}: JSON must be a list of ids or an object with \"ids\"")
        return ids
    out: list[int] = []
    for word in text.split():
        try:
            out.append(int(word))
        except ValueError:
            raise UserError(f"{source}: {word[:30]!r} is not a token id") from None
    return out


def write_output(data: bytes, out: str | None) -> None:
    """Write to stdout, or atomically to `out` (no partial file on failure)."""
    if out in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from llm_playground.bpe.formats.common import FormatError, write_atomic
    try:
        write_atomic(out, data)
    except FormatError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None


def file_size_text(n: int) -> str:
    """A byte count as text in decimal units (B, KB, MB, GB)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


__all__ = ["UserError", "expand_inputs", "check_corpus", "iter_texts", "read_input_bytes",
           "decode_text", "parse_ids", "write_output", "file_size_text"]
