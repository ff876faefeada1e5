"""`playground serve` flags: the shared engine flags map to the same EngineConfig as elsewhere
(playground/engine_args.py), the server's own to a ServerConfig; bad values are one line and
exit status 1, before any model loads; the API key comes from --api-key or PLAYGROUND_API_KEY."""
from __future__ import annotations

import pytest

from llm_playground.playground import cli
from llm_playground.playground.engine_args import engine_config_from_args
from llm_playground.playground.serve_cli import server_config_from_args


def parse(argv):
    return cli.build_parser().parse_args(argv)


def test_flags_map_to_the_configs(monkeypatch):
    monkeypatch.delenv("PLAYGROUND_API_KEY", raising=False)
    a = parse(["--kv-blocks", "99", "serve", "--port", "9001", "--host", "0.0.0.0", "--max-queue", "7",
               "--block-size", "8", "--served-model-name", "m"])
    cfg = server_config_from_args(a)
    assert (cfg.host, cfg.port, cfg.max_queue, cfg.api_key, cfg.model_name) == ("0.0.0.0", 9001, 7, None, "m")
    eng = engine_config_from_args(a)
    assert (eng.num_blocks, eng.block_size) == (99, 8)
    assert server_config_from_args(parse(["serve"])).host == "127.0.0.1"
    monkeypatch.setenv("PLAYGROUND_API_KEY", "from-env")
    assert server_config_from_args(parse(["serve"])).api_key == "from-env"
    assert server_config_from_args(parse(["serve", "--api-key", "flag"])).api_key == "flag"


@pytest.mark.parametrize("argv,needle", [
    (["serve", "--port", "70000"], "port"),
    (["serve", "--max-queue", "0"], "max_queue"),
    (["serve", "--max-body", "-5"], "max_body_bytes"),
    (["--attach", "localhost:8000"], "--attach"),
])
def test_bad_values_are_one_line(monkeypatch, capsys, argv, needle):
    def no_load(*a, **k):
        raise AssertionError("the model must not load")
    monkeypatch.setattr(cli, "_engine", no_load)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("playground: error:") and needle in err[0]
