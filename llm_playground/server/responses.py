"""OpenAI response objects from the engine's RequestOutputs: whole answers and stream chunks.

`Choices` collects a request's outputs per choice (choice index = prompt index x n + sample
index, as OpenAI numbers them) and renders `/v1/completions` and `/v1/chat/completions` answers,
their stream chunks, `usage`, and `logprobs` in both of OpenAI's shapes (the completions one:
tokens / token_logprobs / top_logprobs / text_offset; the chat one: content[] with token,
logprob, bytes, top_logprobs). Log-probabilities are the model's own (stage 0 of the engine's
TokenChoice, model/engine/token_choice.py: what vLLM returns by default), from the same step that
drew the token. `finish_reason` is OpenAI's coarse name (stop / length); the engine's precise
reason (end_of_sequence, stop_string, max_tokens, context_full, kv_cache_full) is kept beside it
as `finish_detail`. This module does not talk to the engine or to HTTP.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from llm_playground.model.engine.outcomes import FinishReason
from llm_playground.server.errors import from_engine


@dataclass
class _Choice:
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    reason: FinishReason | None = None
    logprobs: list = field(default_factory=list)       # TokenChoice per generated token
    started: bool = False                              # a chat chunk with the role went out


class Choices:
    """One HTTP request's choices as the engine's outputs come in."""

    def __init__(self, kind: str, id_: str, request_ids: list[str], n: int, model: str, tokenizer,
                 prompt_tokens: int, top_logprobs: int | None, created: int | None = None) -> None:
        self.kind = kind                           # "completion" or "chat"
        self.index = {rid: i for i, rid in enumerate(request_ids)}
        self.n = n
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_tokens = prompt_tokens
        self.k = top_logprobs                      # None = no logprobs asked
        self.created = created if created is not None else int(time.time())
        self.id = id_
        self.choices = [_Choice() for _ in range(len(request_ids) * n)]
        self.finished = 0
        self._plain_parts: dict[int, tuple[bytes, bytes]] = {}

    @property
    def done(self) -> bool:
        """True once every choice has finished."""
        return self.finished == len(self.choices)

    def add(self, out) -> int:
        """Take one RequestOutput; returns its choice index. A failed request raises the
        APIError the engine's ErrorKind maps to."""
        i = self.index[out.request_id] * self.n + out.sample_index
        c = self.choices[i]
        if out.finish_reason is FinishReason.ERROR:
            raise from_engine(out.error_kind, out.error)
        c.text.append(out.text_delta)
        c.tokens += len(out.new_token_ids)
        if self.k is not None and out.choices:
            c.logprobs += out.choices
        if out.finished and c.reason is None:
            c.reason = FinishReason(out.finish_reason)
            self.finished += 1
        return i

    def usage(self) -> dict:
        """OpenAI's usage: prompt, completion and total tokens."""
        completion = sum(c.tokens for c in self.choices)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}

    # ---- whole answers --------------------------------------------------------------------
    def response(self) -> dict:
        """The non-streaming answer."""
        out = []
        for i, c in enumerate(self.choices):
            item = {"index": i, **_finish(c.reason)}
            text = "".join(c.text)
            if self.kind == "chat":
                item["message"] = {"role": "assistant", "content": text}
                item["logprobs"] = self._chat_logprobs(c.logprobs) if self.k is not None else None
            else:
                item["text"] = text
                item["logprobs"] = self._completion_logprobs(c.logprobs, 0) if self.k is not None else None
            out.append(item)
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": out, "usage": self.usage()}

    # ---- stream chunks --------------------------------------------------------------------
    def chunk_events(self, outs: list) -> bytes:
        """The SSE events for one step's outputs of this request (b"" when nothing to say).
        The common chunk (text only, not the last, no logprobs) is spliced from bytes made once
        per request: it is what every token of every stream costs the event loop."""
        parts = []
        for out in outs:
            i = self.add(out)
            c = self.choices[i]
            news = out.choices if (self.k is not None and out.choices) else []
            if not (out.text_delta or out.finished or news or (self.kind == "chat" and not c.started)):
                continue
            if out.finished or news or self.k is not None or not c.started and self.kind == "chat":
                parts.append(self._event(self._choice_chunk(i, c, out, news)))
            else:
                head, tail = self._plain(i)
                parts += (head, json.dumps(out.text_delta, ensure_ascii=False).encode(), tail)
        return b"".join(parts)

    def _plain(self, i: int) -> tuple[bytes, bytes]:
        """(head, tail) of a text-only chunk of choice i; the JSON text goes between them.
        The same bytes `_choice_chunk` + `_event` give (a test checks)."""
        cached = self._plain_parts.get(i)
        if cached is None:
            obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
            head = (f'data: {{"id": {json.dumps(self.id)}, "object": "{obj}", "created": {self.created}, '
                    f'"model": {json.dumps(self.model, ensure_ascii=False)}, "choices": [{{"index": {i}, ')
            if self.kind == "chat":
                head += '"delta": {"content": '
                tail = '}, "logprobs": null, "finish_reason": null}]}\n\n'
            else:
                head += '"text": '
                tail = ', "logprobs": null, "finish_reason": null}]}\n\n'
            cached = self._plain_parts[i] = (head.encode(), tail.encode())
        return cached

    def usage_event(self) -> bytes:
        """The last chunk when stream_options.include_usage: no choices, the usage."""
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return self._event({"id": self.id, "object": obj, "created": self.created,
                            "model": self.model, "choices": [], "usage": self.usage()})

    def _choice_chunk(self, i: int, c: _Choice, out, news: list) -> dict:
        fin = _finish(c.reason if out.finished else None)
        if self.kind == "chat":
            delta = {"content": out.text_delta}
            if not c.started:
                c.started = True
                delta = {"role": "assistant", "content": out.text_delta}
            item = {"index": i, "delta": delta,
                    "logprobs": self._chat_logprobs(news) if self.k is not None else None, **fin}
            obj = "chat.completion.chunk"
        else:
            offset = sum(len(self._token_text(t.token_id)) for t in c.logprobs[:len(c.logprobs) - len(news)])
            item = {"index": i, "text": out.text_delta,
                    "logprobs": self._completion_logprobs(news, offset) if self.k is not None else None,
                    **fin}
            obj = "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": [item]}

    @staticmethod
    def _event(obj: dict) -> bytes:
        return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

    # ---- logprobs -------------------------------------------------------------------------
    def _token_text(self, tid: int) -> str:
        return self.tokenizer.decode([tid]) if self.tokenizer is not None else str(tid)

    def _token_bytes(self, tid: int) -> list[int]:
        if self.tokenizer is None:
            return list(str(tid).encode())
        return list(self.tokenizer.id_to_bytes(tid))

    def _completion_logprobs(self, choices: list, offset: int) -> dict:
        tokens, lps, tops, offsets = [], [], [], []
        for ch in choices:
            t = self._token_text(ch.token_id)
            tokens.append(t)
            lps.append(ch.logprob(0))
            tops.append({self._token_text(tid): lp for tid, lp in ch.top(0, self.k)})
            offsets.append(offset)
            offset += len(t)
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops,
                "text_offset": offsets}

    def _chat_logprobs(self, choices: list) -> dict:
        content = []
        for ch in choices:
            content.append({"token": self._token_text(ch.token_id), "logprob": ch.logprob(0),
                            "bytes": self._token_bytes(ch.token_id),
                            "top_logprobs": [{"token": self._token_text(tid), "logprob": lp,
                                              "bytes": self._token_bytes(tid)}
                                             for tid, lp in ch.top(0, self.k or 0)]
                            if self.k else []})
        return {"content": content}


def _finish(reason: FinishReason | None) -> dict:
    """`finish_reason` (OpenAI's word) and `finish_detail` (the engine's reason), or nulls."""
    if reason is None:
        return {"finish_reason": None}
    return {"finish_reason": reason.openai, "finish_detail": str(reason)}

