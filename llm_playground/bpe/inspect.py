"""Look inside a tokenizer: vocabulary statistics, longest tokens, how one token was merged.

`vocab_stats(tok)` and `token_report(tok, token)` return plain data (dicts, lists) for `--json`
and for the UI; `render_stats` / `render_token` turn them into rich renderables for `bpe inspect`.
Token bytes are shown in our file's escaped spelling (bpe.formats.native.escape_token). This
module does not encode or train.
"""
from __future__ import annotations

from collections import Counter

from llm_playground.bpe import patterns
from llm_playground.bpe.formats.native import escape_token


def vocab_stats(tok, longest: int = 10) -> dict:
    """Size, merge rule, specials, token-length histogram (bytes) and the longest tokens."""
    vocab = getattr(tok, "vocab", None) or {i: tok.id_to_bytes(i) for i in range(tok.vocab_size)
                                            if i not in tok.special_tokens.values()}
    lengths = Counter(len(b) for b in vocab.values())
    top = sorted(vocab.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:longest]
    merges = getattr(tok, "merges", None)
    return {
        "name": tok.name,
        "vocab_size": tok.vocab_size,
        "normal_tokens": len(vocab),
        "merge_rule": "ranks (tiktoken)" if merges is None else "merge list (Hugging Face)",
        "merges": len(merges) if merges is not None else len(vocab) - sum(
            1 for b in vocab.values() if len(b) == 1),
        "special_tokens": dict(sorted(tok.special_tokens.items(), key=lambda kv: kv[1])),
        "pattern": patterns.name_of(tok.pattern) or tok.pattern,
        "length_histogram": {str(k): lengths[k] for k in sorted(lengths)},
        "mean_token_bytes": round(sum(k * v for k, v in lengths.items()) / max(1, len(vocab)), 3),
        "longest_tokens": [{"id": i, "bytes": len(b), "token": escape_token(b)} for i, b in top],
    }


def resolve_token(tok, token: str) -> int:
    """An id from a decimal id, a special token's text, or a token's text (escaped spelling)."""
    if token.isdigit():
        i = int(token)
        tok.id_to_bytes(i)  # raises ValueError for an unknown id
        return i
    if token in tok.special_tokens:
        return tok.special_tokens[token]
    from llm_playground.bpe.formats.native import unescape_token
    found = tok.token_to_id(unescape_token(token))
    if found is None:
        raise ValueError(f"{token!r} is not a single token of {tok.name or 'this tokenizer'} "
                         f"(it encodes to {len(tok.encode_ordinary(token))} tokens)")
    return found


def _label(tok, i: int) -> str:
    return f"{i}  {escape_token(tok.id_to_bytes(i))!r}"


def tree_as_data(tok, tree):
    """merge_tree output -> nested {"id", "token", "parts"} dicts."""
    if isinstance(tree, int):
        return {"id": tree, "token": escape_token(tok.id_to_bytes(tree)), "parts": []}
    head, *parts = tree
    return {"id": head, "token": escape_token(tok.id_to_bytes(head)),
            "parts": [tree_as_data(tok, p) for p in parts]}


def token_report(tok, token: str) -> dict:
    """One token's id, text, byte length, special flag and merge tree, as a dict."""
    i = resolve_token(tok, token)
    return {"id": i, "token": escape_token(tok.id_to_bytes(i)), "bytes": len(tok.id_to_bytes(i)),
            "special": i in tok.special_tokens.values(),
            "merge_tree": tree_as_data(tok, tok.merge_tree(i))}


def render_stats(stats: dict):
    """vocab_stats output as a rich renderable: a summary and a token-length histogram."""
    from rich.console import Group
    from rich.table import Table
    summary = Table.grid(padding=(0, 2))
    for key in ("name", "vocab_size", "normal_tokens", "merge_rule", "merges", "pattern",
                "mean_token_bytes"):
        summary.add_row(key.replace("_", " "), str(stats[key]))
    summary.add_row("special tokens", ", ".join(f"{t}={i}" for t, i in
                                                 stats["special_tokens"].items()) or "none")
    hist = Table(title="token length (bytes)", show_edge=False)
    hist.add_column("bytes", justify="right")
    hist.add_column("tokens", justify="right")
    hist.add_column("")
    peak = max(stats["length_histogram"].values() or [1])
    for length, count in stats["length_histogram"].items():
        hist.add_row(length, str(count), "█" * max(1, round(30 * count / peak)))
    longest = Table(title="longest tokens", show_edge=False)
    longest.add_column("id", justify="right")
    longest.add_column("bytes", justify="right")
    longest.add_column("token")
    for row in stats["longest_tokens"]:
        longest.add_row(str(row["id"]), str(row["bytes"]), repr(row["token"]))
    return Group(summary, hist, longest)


def render_token(report: dict):
    """A token_report as a rich Tree of its merges."""
    from rich.tree import Tree

    def add(node, data):
        """Add the parts of `data` under `node`, recursively."""
        for part in data["parts"]:
            add(node.add(f"{part['id']}  {part['token']!r}"), part)

    root = Tree(f"[bold]{report['id']}  {report['token']!r}[/]  ({report['bytes']} bytes"
                f"{', special' if report['special'] else ''})")
    add(root, report["merge_tree"])
    return root
