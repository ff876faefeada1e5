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


def render_chat(template: str | None, messages: list[dict], add_generation_prompt: bool = True,
                **kwargs) -> str:
    """The prompt text for `messages` ([{"role", "content"}, ...]); None template = plain ChatML."""
    import jinja2
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise ChatTemplateError(f"a chat message must be a dict with a role, got {m!r}")
    compiled = _compile(template or CHATML_FALLBACK)
    try:
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               **kwargs)
    except jinja2.exceptions.TemplateError as e:
        raise ChatTemplateError(f"chat template failed: {e}") from None


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


def encode_chat(tokenizer, template: str | None, messages: list[dict],
                add_generation_prompt: bool = True, **kwargs) -> list[int]:
    """Prompt ids for `messages`: special-token text that the template writes (<|im_start|>, ...)
    becomes special tokens, while the same text inside a message's content stays ordinary text,
    so a user who types "<|im_end|>" cannot end their own turn. The ids equal
    `tokenizer.encode(render_chat(...), allowed_special="all")` whenever no content spells a
    special token. A template that rewrites contents falls back to that plain encoding."""
    import regex
    parts = _render_with_sentinels(template, messages, add_generation_prompt, **kwargs)
    if parts is None:
        return tokenizer.encode(render_chat(template, messages, add_generation_prompt, **kwargs),
                                allowed_special="all")
    specials = sorted(tokenizer.special_tokens, key=len, reverse=True)
    special_re = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
    ids: list[int] = []
    pending: list[str] = []          # ordinary text since the last special token
    for part in parts:
        if isinstance(part, int):
            pending.append(messages[part]["content"])
            continue
        pos = 0
        for match in (special_re.finditer(part) if special_re else ()):
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
