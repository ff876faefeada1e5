"""bpe.reference and bpe.patterns against tiktoken itself: the pattern strings are the ones in the
installed tiktoken_ext source, the rank files carry the SHA-256 tiktoken expects, and bpe.load
gives our tokenizer for the two reference names."""
from __future__ import annotations

import ast
import inspect

import pytest

from llm_playground import bpe
from llm_playground.bpe import patterns
from llm_playground.bpe.wheel_fetch import sha256_of


def _tiktoken_pat_strs() -> dict[str, str]:
    from tiktoken_ext import openai_public
    tree = ast.parse(inspect.getsource(openai_public))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "r50k_pat_str":
            found["gpt2"] = ast.literal_eval(node.value)
        if isinstance(node, ast.FunctionDef) and node.name in ("cl100k_base", "o200k_base"):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Dict):
                    for k, v in zip(sub.keys, sub.values):
                        if isinstance(k, ast.Constant) and k.value == "pat_str" and \
                                isinstance(v, ast.Constant):
                            found[node.name] = v.value
                if isinstance(sub, ast.Assign) and getattr(sub.targets[0], "id", "") == "pat_str":
                    call = sub.value  # "|".join([...])
                    found[node.name] = call.func.value.value.join(ast.literal_eval(call.args[0]))
    return found


def test_patterns_are_tiktokens_current_strings():
    pats = _tiktoken_pat_strs()
    assert pats["gpt2"] == patterns.GPT2
    assert pats["cl100k_base"] == patterns.CL100K
    assert pats["o200k_base"] == patterns.O200K
    assert patterns.resolve("CL100K") == patterns.CL100K
    assert patterns.resolve(r"\w+|\s+") == r"\w+|\s+"
    with pytest.raises(ValueError, match="neither a known name"):
        patterns.resolve("[unclosed")


def test_2023_cl100k_splits_trailing_whitespace_differently():
    now = patterns.compiled(patterns.CL100K).findall("today\n ")
    then = patterns.compiled(patterns.CL100K_2023).findall("today\n ")
    assert now != then
    assert "".join(now) == "".join(then) == "today\n "


@pytest.mark.network
@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_rank_files_verified_and_loaded(name):
    from llm_playground.bpe.reference import SPECS, load_reference, rank_file
    path = rank_file(name)
    assert sha256_of(path) == SPECS[name].sha256
    ours, enc = load_reference(name)
    assert len(ours.vocab) == len(enc._mergeable_ranks)
    loaded = bpe.load(name)
    assert loaded.name == name and loaded.vocab == ours.vocab
    text = "Reference vocabularies, loaded offline: ✓"
    assert loaded.encode(text) == enc.encode(text)


def test_unknown_reference_name():
    from llm_playground.bpe.reference import load_reference
    with pytest.raises(ValueError, match="unknown reference vocabulary"):
        load_reference("p50k_base")
