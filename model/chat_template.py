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
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
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
