"""Oracle: render_chat equals transformers' apply_chat_template (tokenize=False) on real templates."""
from __future__ import annotations

from functools import lru_cache

import pytest

from model.chat_template import ChatTemplateError, render_chat

transformers = pytest.importorskip("transformers")
from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

LLAMA3_STYLE = (
    "{{ bos_token }}{% for message in messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
STRICT = (
    "{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
    "{{ raise_exception('only user and assistant') }}{% endif %}\n  {{ m['content'] | tojson }}\n"
    "{% if loop.index > 5 %}{% break %}{% endif %}{% endfor %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "  and <b>3+3</b>?  "}],
    [{"role": "user", "content": "用一句话介绍长城。"}],
]


@lru_cache(maxsize=1)
def smollm_template() -> str:
    from model.default_model import ensure_default_model
    from gguf import GGUFReader
    return GGUFReader(str(ensure_default_model())).fields["tokenizer.chat_template"].contents()


@pytest.mark.network
@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("gen", [True, False])
def test_default_model_template_matches_transformers(conv, gen):
    template = smollm_template()
    messages = CONVERSATIONS[conv]
    ours = render_chat(template, messages, add_generation_prompt=gen)
    ref = render_jinja_template([messages], chat_template=template, add_generation_prompt=gen)[0][0]
    assert ours == ref


@pytest.mark.parametrize("template", [LLAMA3_STYLE, STRICT])
@pytest.mark.parametrize("conv", [0, 2])
def test_other_templates_match_transformers(template, conv):
    messages = CONVERSATIONS[conv]
    kw = {"bos_token": "<|begin_of_text|>"}
    ours = render_chat(template, messages, **kw)
    ref = render_jinja_template([messages], chat_template=template, add_generation_prompt=True, **kw)[0][0]
    assert ours == ref


def test_raise_exception_and_bad_syntax_are_clear_errors():
    with pytest.raises(ChatTemplateError, match="only user and assistant"):
        render_chat(STRICT, CONVERSATIONS[1])
    with pytest.raises(ChatTemplateError, match="not valid Jinja"):
        render_chat("{% for %}", CONVERSATIONS[0])
