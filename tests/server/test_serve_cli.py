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
    (["serve", "--data-parallel", "0"], "--data-parallel"),
    (["serve", "--data-parallel", "2", "--tensor-parallel", "2"], "--tensor-parallel"),
])
def test_bad_values_are_one_line(monkeypatch, capsys, argv, needle):
    def no_load(*a, **k):
        raise AssertionError("the model must not load")
    monkeypatch.setattr(cli, "_engine", no_load)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("playground: error:") and needle in err[0]


def test_replica_devices(monkeypatch):
    import torch

    from llm_playground.playground.serve_cli import replica_devices
    assert replica_devices("cpu", 3) == ["cpu"] * 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert replica_devices(None, 2) == ["cpu", "cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert replica_devices(None, 2) == ["cuda:0", "cuda:1"]
    assert replica_devices("cuda", 2) == ["cuda:0", "cuda:1"]
    assert replica_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]       # an index asked for: shared
    assert replica_devices(None, 3) == ["cuda"] * 3                   # fewer GPUs than replicas
