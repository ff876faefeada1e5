"""The engine flags (playground/engine_args.py): one mapping to EngineConfig for the app and every
subcommand, the same defaults, and the same one-line errors for bad values.

Oracles: EngineConfig built by hand from the documented flag meanings, and parsing the same flags
through every parser position (app, before a subcommand, after it)."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from llm_playground import model
import llm_playground.model.weights.loader  # noqa: F401  (makes model.weights.loader an attribute)
from llm_playground.model.engine.config import EngineConfig
from llm_playground.playground import cli
from llm_playground.playground.engine_args import (FLAG_FIELDS, add_engine_flags,
                                                   engine_config_from_args, parse_bytes)
from engine_helpers import tiny_loaded

M, G = 2**20, 2**30

# flags -> the EngineConfig fields they must set (the rest stay at EngineConfig's defaults)
CASES = [
    ([], {}),
    (["--kv-blocks", "64"], {"num_blocks": 64}),
    (["--kv-budget", "512M"], {"kv_cache_bytes": 512 * M}),
    (["--kv-budget", "2GiB"], {"kv_cache_bytes": 2 * G}),
    (["--kv-budget", "1048576"], {"kv_cache_bytes": 1048576}),
    (["--kv-budget", "1.5kb"], {"kv_cache_bytes": 1536}),
    (["--block-size", "4", "--kv-blocks", "32", "--attention", "streaming:4,256"],
     {"block_size": 4, "num_blocks": 32, "attention": "streaming:4,256"}),
    (["--device", "cuda:1", "--dtype", "bfloat16"], {"device": "cuda:1", "dtype": "bfloat16"}),
    (["--attention", "local:8", "--dtype", "float32", "--kv-budget", "64M", "--block-size", "8",
      "--device", "cpu"],
     {"attention": "local:8", "dtype": "float32", "kv_cache_bytes": 64 * M, "block_size": 8,
      "device": "cpu"}),
    (["--speculate", "ngram:4"], {"speculate": "ngram:4"}),
    (["--speculate", "draft:layers=20:3", "--kv-blocks", "8"],
     {"speculate": "draft:layers=20:3", "num_blocks": 8}),
]


def _positions(flags: list[str]) -> dict[str, list[str]]:
    """The same flags given to the app and to each subcommand, before and after its name."""
    return {
        "app": flags,
        "generate, flags after": ["generate", "--prompt", "x", *flags],
        "generate, flags before": [*flags, "generate", "--prompt", "x"],
        "chat, flags after": ["chat", "--plain", *flags],
        "chat, flags before": [*flags, "chat", "--plain"],
    }


def _config(argv: list[str]) -> EngineConfig:
    return engine_config_from_args(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize("flags,fields", CASES, ids=[" ".join(f) or "no flags" for f, _ in CASES])
def test_every_parser_gives_the_same_engine_config(flags, fields):
    want = EngineConfig(**fields)
    got = {where: _config(argv) for where, argv in _positions(flags).items()}
    assert got == {where: want for where in got}


def test_a_subcommand_flag_overrides_the_one_before_it_and_keeps_the_others():
    cfg = _config(["--kv-blocks", "8", "--block-size", "4", "generate", "--prompt", "x",
                   "--kv-blocks", "16"])
    assert cfg == EngineConfig(num_blocks=16, block_size=4)


def test_no_flags_means_engine_config_defaults_and_help_names_them():
    assert _config([]) == EngineConfig()
    assert engine_config_from_args(argparse.Namespace()) == EngineConfig()   # hand-built, empty
    helps = {a.dest: a.help for a in cli.build_parser()._actions}
    d = EngineConfig()
    assert d.device is None and "default: CUDA where available, else cpu" in helps["device"]
    assert f"default {d.attention}" in helps["attention"]
    assert f"({d.block_size})" in helps["block_size"]


def test_the_mapping_covers_every_engine_flag_and_names_real_fields():
    parser = argparse.ArgumentParser()
    add_engine_flags(parser)
    dests = {a.dest for a in parser._actions} - {"help", "model", "tensor_parallel"}   # --model: load_model; --tensor-parallel: parallel_engine
    assert dests == set(FLAG_FIELDS)
    assert set(FLAG_FIELDS.values()) <= {f.name for f in dataclasses.fields(EngineConfig)}
    assert len(set(FLAG_FIELDS.values())) == len(FLAG_FIELDS)
    # each flag, given a non-default value, sets exactly its own field
    samples = {"dtype": ("float16", "float16"), "device": ("cuda", "cuda"),
               "attention": ("atrous:2", "atrous:2"), "block_size": ("8", 8),
               "kv_blocks": ("5", 5), "kv_budget": ("3M", 3 * M),
               "weights": ("int4", "int4"), "group_size": ("64", 64),
               "kv_dtype": ("int8", "int8"),
               "speculate": ("draft:small.gguf:2", "draft:small.gguf:2")}
    assert set(samples) == set(FLAG_FIELDS)
    default = EngineConfig()
    for dest, (text, value) in samples.items():
        flag = "--" + dest.replace("_", "-")
        cfg = _config([flag, text])
        changed = {f.name for f in dataclasses.fields(EngineConfig)
                   if getattr(cfg, f.name) != getattr(default, f.name)}
        assert changed == {FLAG_FIELDS[dest]} and getattr(cfg, FLAG_FIELDS[dest]) == value, flag


def test_parse_bytes_forms():
    assert parse_bytes(None) is None and parse_bytes(4096) == 4096
    assert parse_bytes(" 512 MiB ") == 512 * M and parse_bytes("2g") == 2 * G
    for bad in ("nope", "12X", "", "-1M"):
        with pytest.raises(ValueError, match="use bytes or a size like 512M or 2GiB"):
            parse_bytes(bad)


BAD_VALUES = [
    (["--kv-budget", "nope"], "--kv-budget 'nope': use bytes or a size like 512M or 2GiB"),
    (["--kv-budget", "0"], "kv_cache_bytes must be >= 1, got 0"),
    (["--kv-blocks", "0"], "num_blocks must be >= 1, got 0"),
    (["--block-size", "0"], "block_size must be >= 1, got 0"),
    (["--attention", "wide:3"], "unknown attention pattern 'wide:3'"),
    (["--attention", "local"], "local takes 1 number"),
    (["--speculate", "ngram"], "speculate 'ngram': K must be an integer"),
    (["--speculate", "ngram:0"], "speculate 'ngram:0': K must be between 1 and 16"),
    (["--speculate", "draft:4"], "speculate 'draft:4': draft needs a model and K"),
    (["--speculate", "medusa:4"], "speculate 'medusa:4': unknown method 'medusa'"),
]


@pytest.fixture
def no_model_load(monkeypatch):
    """Bad flags must fail before any model is loaded or the app is started."""
    calls = []
    monkeypatch.setattr(model.weights.loader, "load_model",
                        lambda *a, **k: calls.append("load_model") or tiny_loaded(0))
    import llm_playground.playground.app as app_module

    class NoApp:
        def __init__(self, *a, **k):
            calls.append("app")

        def run(self):
            calls.append("app.run")

    monkeypatch.setattr(app_module, "PlaygroundApp", NoApp)
    monkeypatch.setattr("llm_playground.playground.tokenizer_sources.start_process_helpers",
                        lambda: calls.append("helpers") or True)
    return calls


@pytest.mark.parametrize("flags,message", BAD_VALUES, ids=[" ".join(f) for f, _ in BAD_VALUES])
def test_bad_values_are_one_line_and_exit_1_everywhere(no_model_load, capsys, flags, message):
    lines = {}
    for where, argv in _positions(flags).items():
        assert cli.main(argv) == 1, where
        lines[where] = capsys.readouterr().err.strip().splitlines()
    first = lines["app"]
    assert len(first) == 1 and first[0].startswith("playground: error: ") and message in first[0]
    assert lines == {where: first for where in lines}          # the same line from every parser
    assert no_model_load == []


@pytest.mark.parametrize("flags,message", BAD_VALUES, ids=[" ".join(f) for f, _ in BAD_VALUES])
def test_the_mapping_itself_raises_the_one_line_value_error(flags, message):
    args = cli.build_parser().parse_args(flags)
    with pytest.raises(ValueError) as e:
        engine_config_from_args(args)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("flag,value", [("--block-size", "abc"), ("--kv-blocks", "1.5")])
def test_non_integers_are_argparse_errors_naming_the_flag(capsys, flag, value):
    for where, argv in _positions([flag, value]).items():
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2, where
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"argument {flag}: invalid int value: '{value}'" in last, where


def test_app_and_subcommands_hand_that_config_to_the_engine(monkeypatch):
    """End to end on the tiny model: the Engine the app's factory builds and the one `generate`
    builds get the very EngineConfig engine_config_from_args gives."""
    from llm_playground.playground.engine_factory import real_factory
    loaded = tiny_loaded(0)
    seen = []
    monkeypatch.setattr(model.weights.loader, "load_model",
                        lambda path, dtype, device, progress=None, **k: seen.append((dtype, device)) or loaded)
    flags = ["--block-size", "4", "--kv-blocks", "32", "--attention", "local:8"]
    want = EngineConfig(block_size=4, num_blocks=32, attention="local:8")
    info, app_engine = real_factory(cli.build_parser().parse_args(flags))(lambda *a, **k: None)
    cli_engine, _ = cli._engine(cli.build_parser().parse_args(["generate", "--prompt", "x", *flags]))
    assert app_engine.config == cli_engine.config == want
    assert info.block_size == 4 and info.num_blocks == 32
    assert seen == [(None, None), (None, None)]     # no --device: load_model picks (CUDA if any)
