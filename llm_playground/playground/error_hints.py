"""What the user is told when something fails: one line, and what to do about it.

`one_line` shortens an exception to the first line of its message, naming the exception class
only for unexpected errors (not for bad input: a ValueError or a loader's *LoadError says what
is wrong by itself). `hint` / `hint_text` add, for the engine worker's commands (`chat`,
`pattern`, `attention`), the next thing to try: a larger KV cache, the pattern syntax, a prompt
first. The engine worker (playground/engine_worker.py) and the tokenizer lab use these.
It does not post messages or decide how a failure is shown (a notification, the answer's
footer): the callers do.
"""
from __future__ import annotations


def one_line(error: BaseException) -> str:
    """First line of the message; the class name only for unexpected errors (not bad input)."""
    text = str(error).strip().splitlines()
    if not text:
        return type(error).__name__
    expected = isinstance(error, ValueError) or type(error).__name__.endswith("LoadError")
    return text[0] if expected else f"{type(error).__name__}: {text[0]}"


def hint(kind: str, error: BaseException) -> str:
    """One line saying what went wrong and what to do about it."""
    return hint_text(kind, one_line(error))


def hint_text(kind: str, msg: str) -> str:
    """`msg` with the next thing to try for a failed command of this `kind`, where one helps."""
    low = msg.lower()
    if kind == "chat" and ("block" in low or "cache" in low or "long" in low or "context" in low):
        return f"{msg} - clear the chat (ctrl+l) or start with a larger --kv-blocks."
    if kind == "pattern":
        return f"{msg} - patterns: dense, local:W, atrous:K, sparse:W,K, streaming:S,W."
    if kind == "attention":
        return f"{msg} - send a prompt first, and pick a layer and head inside the model."
    return msg
