"""Start a tensor-parallel engine: process groups, the follower ranks, rank 0's Engine.

`start_tensor_parallel(source, world, config)` returns a `TensorParallelEngine` in this process
(rank 0), which is an `Engine` (model/engine/engine.py, unchanged) whose runner is a
`LeaderRunner` (tp_runner.py). Two launchers:
- spawned (`playground --tensor-parallel N`, the tests): this process becomes rank 0 and starts
  ranks 1..N-1 with torch.multiprocessing (spawn), rendezvous over TCP on 127.0.0.1;
- `torchrun --nproc-per-node N -m llm_playground.playground.cli --tensor-parallel N ...`: the
  environment names the rank; ranks != 0 run the follower loop and exit inside this call.
Groups: the default group carries the step's collectives (NCCL on CUDA, gloo on the CPU) with
`ParallelConfig.timeout_s`; a second gloo group carries the pickled plans, with a long timeout
on the followers (they wait on it while the engine is idle: a dead rank 0 is seen as a closed
socket, not by the clock) and timeout_s on rank 0 (a hung follower fails the send). Every rank loads the full model (weights/loader.py), slices it (tp_shard.py) and
builds a ModelRunner with rank 0's block count. CUDA graphs are off under tensor parallelism
(NCCL inside captured graphs is not done here). Not done: pipeline parallelism, sequence
parallelism, overlapping the all-reduce with compute.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.engine import Engine
from llm_playground.model.engine.reports import ParallelReport, RankShare, StepReport
from llm_playground.model.parallel.random_model import ModelSource
from llm_playground.model.parallel.tp_layers import CommTimer
from llm_playground.model.parallel.tp_plan import shard_plan
from llm_playground.model.parallel.tp_runner import LeaderRunner, TensorParallelError, follower_loop
from llm_playground.model.parallel.tp_shard import QUANTISED, check_weights, quantize_shard, shard_model

IDLE_TIMEOUT = timedelta(days=7)   # the control group: followers wait on it while idle


@dataclass
class ParallelConfig:
    """How the ranks run and when a silent peer counts as dead."""
    # A step's collectives give up after this long (a hung rank; a killed one is seen at once
    # through its closed socket or its exit code). A step of a big model on a slow CPU is well
    # under a minute.
    timeout_s: float = 60.0
    # torch threads per follower on the CPU; None = the cores divided by the ranks (two ranks
    # on 2 cores each take 1, instead of fighting over both).
    threads_per_rank: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if self.threads_per_rank is not None and (not isinstance(self.threads_per_rank, int)
                                                  or self.threads_per_rank < 1):
            raise ValueError(f"threads_per_rank must be >= 1, got {self.threads_per_rank!r}")


def _device(rank: int, device: str | None) -> torch.device:
    """cuda:LOCAL_RANK where CUDA is asked for (or auto and present), else the CPU."""
    want_cuda = device is not None and device.startswith("cuda") or (
        device in (None, "auto") and torch.cuda.is_available())
    if not want_cuda:
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", rank))
    return torch.device("cuda", local)


def _init_groups(rank: int, world: int, init_method: str, dev: torch.device, timeout_s: float):
    """The default group (step collectives) and the gloo control group; returns the latter."""
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    # A group's timeout is each process's own: followers wait for the next plan as long as the
    # engine idles, rank 0's sends give up after timeout_s (a hung follower: a clear error).
    idle = timedelta(seconds=timeout_s) if rank == 0 else IDLE_TIMEOUT
    return dist.new_group(backend="gloo", timeout=idle)


def _shard(source: ModelSource, world: int, rank: int, dev: torch.device, timer: CommTimer,
           loaded=None):
    """Load (unless given), plan and slice one rank's model; returns (loaded, shares)."""
    fmt = source.dtype
    if loaded is None:
        loaded, fmt = source.load(dev, float_weights=True)
    shares = shard_plan(loaded.config, world)                 # ShardError: a clear one line
    shard_model(loaded.model, shares[rank], dist.group.WORLD, timer)
    if fmt in QUANTISED:
        quantize_shard(loaded.model, loaded.dtype, fmt, source.group_size)
        loaded.weight_format = fmt
    return loaded, shares


def _follower_main(rank: int, world: int, init_method: str, source: ModelSource,
                   device: str | None, pconf: ParallelConfig) -> None:
    """A follower rank's process: join, load and slice, then follow rank 0 until "stop"."""
    from llm_playground.model.engine.model_runner import ModelRunner
    dev = _device(rank, device)
    if dev.type == "cpu":
        torch.set_num_threads(pconf.threads_per_rank or max(1, (os.cpu_count() or 1) // world))
    try:
        ctrl = _init_groups(rank, world, init_method, dev, pconf.timeout_s)
        timer = CommTimer(dev)
        loaded, _ = _shard(source, world, rank, dev, timer)
        box = [None]
        dist.broadcast_object_list(box, src=0, group=ctrl)
        if box[0][0] == "abort":
            os._exit(0)
        init = box[0][1]
        runner = ModelRunner(loaded.model, init["num_blocks"], init["block_size"], loaded.dtype,
                             dev, cuda_graphs=False, max_num_seqs=init["max_num_seqs"],
                             max_blocks_per_seq=init["max_blocks_per_seq"])
        follower_loop(runner, ctrl)
    except Exception as e:  # noqa: BLE001  one line on stderr, then a non-zero exit
        print(f"tensor-parallel rank {rank}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr, flush=True)
        os._exit(1)
    try:
        dist.destroy_process_group()
    finally:
        os._exit(0)


class TensorParallelEngine(Engine):
    """An Engine on rank 0 whose runner drives every rank (LeaderRunner); its StepReports carry
    a ParallelReport (heads and KV bytes per rank, the step's collective time)."""

    def __init__(self, loaded, config: EngineConfig, shares, ctrl, timer: CommTimer,
                 procs=(), **kw) -> None:
        super().__init__(loaded, dataclasses.replace(config, cuda_graphs=False), **kw)
        self.world = len(shares)
        self.runner = LeaderRunner(self.runner, ctrl, self.world, timer, procs)
        self._shares = shares
        mc, nb = loaded.config, self.bm.num_blocks
        elem = torch.empty((), dtype=loaded.dtype).element_size()
        per = [2 * mc.num_layers * len(s.kv_heads) * mc.head_dim * elem * self.bm.block_size
               for s in shares]
        self.rank_shares = [RankShare(s.rank, len(s.q_heads), len(s.kv_heads), s.replicated_kv,
                                      p, p * nb) for s, p in zip(shares, per)]

    @property
    def kv_bytes_per_block(self) -> int:
        """Bytes one block takes over all ranks (each holds its KV heads' part; a replicated KV
        head counts on every rank that holds it): what the CacheReport's totals are made of."""
        return sum(r.bytes_per_block for r in self.rank_shares)

    def step(self) -> StepReport:
        """Engine.step, plus the ParallelReport of the step."""
        report = super().step()
        r = self.runner
        report.parallel = ParallelReport("tensor", self.world, self.rank_shares,
                                         comm_s=r.last_comm_s, comm_calls=r.last_comm_calls,
                                         broadcast_s=r.last_broadcast_s)
        r.last_comm_s, r.last_comm_calls, r.last_broadcast_s = 0.0, 0, 0.0
        return report

    def attention_weights(self, prompt_ids, layer, head):
        """Not under tensor parallelism: the heat map's reference path runs on one rank."""
        raise ValueError("attention weights are not available under tensor parallelism "
                         "(run without --tensor-parallel to see them)")

    def prompt_logits(self, ids: list[int]) -> torch.Tensor:
        """(T, V) float32 logits of a prompt, all ranks together (tests and checks)."""
        return self.runner.prompt_logits(ids)

    def close(self) -> None:
        """Stop the followers and leave the process groups (idempotent)."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self.runner.close()
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tensor_parallel(source: ModelSource, world: int, config: EngineConfig | None = None,
                          pconf: ParallelConfig | None = None, **engine_kw) -> TensorParallelEngine:
    """Rank 0's TensorParallelEngine over `world` ranks (see the module docstring). Under
    torchrun a rank other than 0 follows inside this call and then exits the process."""
    config = config or EngineConfig()
    pconf = pconf or ParallelConfig()
    if dist.is_initialized():
        raise RuntimeError("a torch.distributed process group already exists in this process")
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if torchrun:
        rank, env_world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if env_world != world:
            raise ValueError(f"--tensor-parallel {world} but torchrun started {env_world} ranks")
        if rank != 0:
            _follower_main(rank, world, "env://", source, config.device, pconf)   # exits
    dev = _device(0, config.device)
    check_weights(source.weight_format(dev))    # refuse before anything loads
    timer = CommTimer(dev)
    loaded, fmt = source.load(dev, float_weights=True)
    shard_plan(loaded.config, world)            # refuse before any process starts
    procs = []
    if torchrun:
        init_method = "env://"
    else:
        init_method = f"tcp://127.0.0.1:{_free_port()}"
        ctx = mp.get_context("spawn")
        for rank in range(1, world):
            p = ctx.Process(target=_follower_main, name=f"tp-rank-{rank}", daemon=True,
                            args=(rank, world, init_method, source, config.device, pconf))
            p.start()
            procs.append((rank, p))
    ctrl = None
    try:
        ctrl = _init_groups(0, world, init_method, dev, pconf.timeout_s)
        loaded, shares = _shard(dataclasses.replace(source, dtype=fmt), world, 0, dev, timer,
                                loaded)
        engine = TensorParallelEngine(loaded, config, shares, ctrl, timer, procs, **engine_kw)
        init = dict(num_blocks=engine.bm.num_blocks, block_size=engine.bm.block_size,
                    max_num_seqs=engine.config.max_num_seqs,
                    max_blocks_per_seq=engine.bm.blocks_for(engine.max_model_len))
        dist.broadcast_object_list([("init", init)], src=0, group=ctrl)
    except BaseException:
        if ctrl is not None:
            try:
                dist.broadcast_object_list([("abort", None)], src=0, group=ctrl)
            except Exception:  # noqa: BLE001
                pass
        for _, p in procs:
            p.kill()
        if dist.is_initialized():
            dist.destroy_process_group()
        raise
    return engine


__all__ = ["ParallelConfig", "TensorParallelEngine", "TensorParallelError", "start_tensor_parallel"]
