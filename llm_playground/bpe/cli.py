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
import os
import sys

from llm_playground.bpe.cli_commands import cmd_compare, cmd_decode, cmd_encode, cmd_inspect, cmd_train
from llm_playground.bpe.cli_io import UserError


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
