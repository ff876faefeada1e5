"""Render a model's chat template (Jinja) the way transformers' `apply_chat_template` does.

Same environment as transformers: `ImmutableSandboxedEnvironment` with `trim_blocks` and
`lstrip_blocks`, the loop-controls extension, a `tojson` filter that does not HTML-escape,
`raise_exception`, `strftime_now`. A model's default system prompt (SmolLM's "You are a helpful
AI assistant named SmolLM...") comes from the template itself when no system message is given.
This module does not tokenize and does not know any model's special tokens beyond what the
caller passes as keyword arguments (bos_token=..., eos_token=...).
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

CHATML_FALLBACK = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTemplateError(ValueError):
    """The template failed to render (it raised, or it is not valid Jinja)."""


@lru_cache(maxsize=8)
def _compile(template: str):
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        """The template's raise_exception(): fails the render with `message`."""
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        """The template's tojson filter: json.dumps, non-ASCII kept by default."""
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template is not valid Jinja: {e}") from None


def _check_messages(messages: list[dict]) -> None:
    """Every message is a dict with a string role and string content (one line naming the
    message otherwise; Jinja would raise a bare TypeError deep inside the template)."""
    if not isinstance(messages, (list, tuple)):
        raise ChatTemplateError(f"chat messages must be a list of dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise ChatTemplateError(f"chat message {i} must be a dict with a role, got {m!r:.80}")
        if not isinstance(m["role"], str):
            raise ChatTemplateError(f"chat message {i}: role must be a string, got "
                                    f"{type(m['role']).__name__}")
        if not isinstance(m.get("content"), str):
            raise ChatTemplateError(f"chat message {i}: content must be a string, got "
                                    f"{type(m.get('content')).__name__}")


def render_chat(template: str | None, messages: list[dict], add_generation_prompt: bool = True,
                **kwargs) -> str:
    """The prompt text for `messages` ([{"role", "content"}, ...]); None template = plain ChatML."""
    import jinja2
    _check_messages(messages)
    compiled = _compile(template or CHATML_FALLBACK)
    try:
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               **kwargs)
    except jinja2.exceptions.TemplateError as e:
        raise ChatTemplateError(f"chat template failed: {e}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise ChatTemplateError(f"chat template failed: {type(e).__name__}: {e}") from None


_SENTINEL = "\ue000{}\ue001"     # private-use characters: no template or tokenizer gives them meaning


def _render_with_sentinels(template: str | None, messages: list[dict],
                           add_generation_prompt: bool, **kwargs) -> list[str | int] | None:
    """The rendered prompt as [template text, message index, template text, ...], or None when the
    template does not copy each message's content verbatim (it trims or rewrites it)."""
    import re
    marked = [dict(m, content=_SENTINEL.format(i)) if isinstance(m.get("content"), str) else m
              for i, m in enumerate(messages)]
    text = render_chat(template, marked, add_generation_prompt, **kwargs)
    parts: list[str | int] = []
    for k, piece in enumerate(re.split("\ue000(\\d+)\ue001", text)):
        parts.append(int(piece) if k % 2 else piece)
    joined = "".join(p if isinstance(p, str) else messages[p]["content"] for p in parts)
    if joined != render_chat(template, messages, add_generation_prompt, **kwargs):
        return None
    return parts


# ---- content spans ---------------------------------------------------------------------------
# To tell the template's own text (which may hold special tokens) from message content (which
# never may), each content is rendered wrapped in two marker characters that occur nowhere in
# the template, the contents or the keyword arguments. Two placements are tried, for all
# messages at once: the markers around the whole content (a template that copies, upper-cases,
# escapes ... it), or around its stripped core with the leading and trailing whitespace outside
# (a template that trims it, as Llama-3's and Mistral's do). A placement is used only when the
# marked render, markers removed, is exactly the real render and the markers pair up; the text
# between a pair is then the content as the template transformed it, encoded as plain text.
# Whitespace next to a pair that equals the content's own leading / trailing whitespace is
# counted as content too (conservative: it can only keep text plain).

def _free_markers(texts) -> tuple[str, str]:
    used: set[str] = set()
    for t in texts:
        used.update(t)
    free = (chr(c) for c in range(0xE000, 0xF900) if chr(c) not in used)
    try:
        return next(free), next(free)
    except StopIteration:   # 6,400 private-use characters all in use: no honest chat does that
        raise ChatTemplateError("chat messages use every private-use character; cannot mark "
                                "their content") from None


def _edges(content: str) -> tuple[str, str, str]:
    core = content.strip()
    if not core:
        return content, "", ""
    lead = content[:len(content) - len(content.lstrip())]
    trail = content[len(content.rstrip()):]
    return lead, core, trail


def _pairs(text: str, open_: str, close: str) -> list[tuple[bool, str]] | None:
    """[(is_content, text), ...] split at properly paired markers, or None when they do not pair."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    while True:
        i = text.find(open_, pos)
        if i < 0:
            tail = text[pos:]
            if close in tail:
                return None
            parts.append((False, tail))
            return parts
        j = text.find(close, i + 1)
        if j < 0 or close in text[pos:i] or open_ in text[i + 1:j]:
            return None
        parts += [(False, text[pos:i]), (True, text[i + 1:j])]
        pos = j + 1


def _content_spans(template, messages, add_generation_prompt, kwargs, real: str
                   ) -> list[tuple[bool, str]] | None:
    """The real render as [(is_content, text), ...], or None when no placement traces it."""
    texts = [template or CHATML_FALLBACK] + [m["content"] for m in messages]
    texts += [v for v in kwargs.values() if isinstance(v, str)]
    open_, close = _free_markers(texts)
    for stripped in (False, True):
        marked, edges = [], []
        for m in messages:
            lead, core, trail = _edges(m["content"]) if stripped else ("", m["content"], "")
            marked.append(dict(m, content=lead + open_ + core + close + trail))
            edges.append((lead, trail))
        try:
            text = render_chat(template, marked, add_generation_prompt, **kwargs)
        except ChatTemplateError:
            continue
        parts = _pairs(text, open_, close)
        if parts is None or "".join(t for _, t in parts) != real:
            continue
        if stripped:
            parts = _absorb_whitespace(parts, {e for e in edges})
        return parts
    return None


def _absorb_whitespace(parts, edges: set[tuple[str, str]]) -> list[tuple[bool, str]]:
    """Move whitespace beside a content span into it when it equals some content's own leading
    or trailing whitespace (so a copied content's edges stay plain text)."""
    leads = sorted({lead for lead, _ in edges if lead}, key=len, reverse=True)
    trails = sorted({trail for _, trail in edges if trail}, key=len, reverse=True)
    out = [list(p) for p in parts]
    for k, (is_content, _) in enumerate(out):
        if not is_content:
            continue
        before, after = out[k - 1], out[k + 1] if k + 1 < len(out) else None
        lead = next((w for w in leads if not before[0] and before[1].endswith(w)), "")
        if lead:
            before[1] = before[1][:-len(lead)]
            out[k][1] = lead + out[k][1]
        if after is not None and not after[0]:
            trail = next((w for w in trails if after[1].startswith(w)), "")
            if trail:
                after[1] = after[1][len(trail):]
                out[k][1] += trail
    return [(c, t) for c, t in out]


def _special_regex(tokenizer):
    import regex
    specials = sorted(tokenizer.special_tokens, key=len, reverse=True)
    return regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None


def _refuse_special_text(messages, special_re, fields=None) -> None:
    """ChatTemplateError when a message's `fields` (None: every string field but content)
    spell a special token."""
    for i, m in enumerate(messages):
        for key, value in m.items():
            if fields is None and key == "content":
                continue
            if fields is not None and key not in fields:
                continue
            found = special_re.search(value) if isinstance(value, str) else None
            if found:
                raise ChatTemplateError(
                    f"chat message {i}: {key} holds special-token text {found.group()!r}; "
                    + ("only the chat template may write special tokens" if fields is None else
                       "this chat template rewrites message content in a way whose result "
                       "cannot be told apart from its own text, so that text is refused"))


def encode_chat(tokenizer, template: str | None, messages: list[dict],
                add_generation_prompt: bool = True, **kwargs) -> list[int]:
    """Prompt ids for `messages`: special-token text that the template writes (<|im_start|>, ...)
    becomes special tokens, while message content is always ordinary text, whatever the template
    does with it (copies, trims, upper-cases it): a user who types "<|im_end|>" cannot end their
    own turn. The ids equal `tokenizer.encode(render_chat(...), allowed_special="all")` whenever
    no content spells a special token. A template whose content spans cannot be traced (it cuts
    or reorders content) encodes that way only when no content holds special-token text, and is
    refused (ChatTemplateError) otherwise. Special-token text in a role is refused."""
    real = render_chat(template, messages, add_generation_prompt, **kwargs)
    special_re = _special_regex(tokenizer)
    if special_re is None:
        return tokenizer.encode_ordinary(real)
    _refuse_special_text(messages, special_re)
    parts = _content_spans(template, messages, add_generation_prompt, kwargs, real)
    if parts is None:
        _refuse_special_text(messages, special_re, fields=("content",))
        return tokenizer.encode(real, allowed_special="all")
    ids: list[int] = []
    pending: list[str] = []          # ordinary text since the last special token
    for is_content, part in parts:
        if is_content:
            pending.append(part)
            continue
        pos = 0
        for match in special_re.finditer(part):
            pending.append(part[pos:match.start()])
            ids += tokenizer.encode_ordinary("".join(pending))
            ids.append(tokenizer.special_tokens[match.group()])
            pending, pos = [], match.end()
        pending.append(part[pos:])
    return ids + tokenizer.encode_ordinary("".join(pending))


def default_system_prompt(template: str | None) -> str | None:
    """The system prompt a template writes when the messages have none (SmolLM's "You are a
    helpful AI assistant named SmolLM..."), or None when it writes none or it cannot be told."""
    if not template:
        return None
    user = [{"role": "user", "content": "\ue002"}]
    try:
        bare = render_chat(template, user)
        parts = _render_with_sentinels(template, [{"role": "system", "content": "\ue003"}] + user, True)
    except ChatTemplateError:
        return None
    if parts is None or len(parts) != 5 or parts[1] != 0 or parts[3] != 1:
        return None
    before, between = parts[0], parts[2]     # template text before and after the system content
    head = bare.split("\ue002")[0]
    if not (head.startswith(before) and head.endswith(between)) or len(head) <= len(before) + len(between):
        return None
    found = head[len(before):len(head) - len(between)]
    return found or None
