"""`IncrementalDecoder`: turn token ids into text one id at a time, never emitting half a character.

A BPE token can end in the middle of a UTF-8 sequence (one emoji is often 2-4 tokens). The
decoder keeps the trailing incomplete bytes until the next token completes them, using Python's
incremental UTF-8 decoder with errors="replace", so that for every prefix of a token list
`"".join(push(i) for i in ids) + flush() == tokenizer.decode(ids)`.

It does not know about chat templates or stop strings; the caller handles those.
"""
from __future__ import annotations

import codecs


class IncrementalDecoder:
    """Incremental detokenizer for one sequence (create one per stream)."""

    def __init__(self, tokenizer):
        self._id_to_bytes = tokenizer.id_to_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now complete ("" while a character is open)."""
        return self._decoder.decode(self._id_to_bytes(token_id), final=False)

    def push_many(self, ids) -> str:
        """Add several tokens; return the text that is now complete."""
        return self._decoder.decode(b"".join(map(self._id_to_bytes, ids)), final=False)

    @property
    def pending(self) -> bytes:
        """Bytes held back because they do not yet form a complete character."""
        return self._decoder.getstate()[0]

    def flush(self) -> str:
        """End of stream: emit what is held back (incomplete bytes become U+FFFD) and reset."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text
