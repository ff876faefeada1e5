"""Rank 0's runner proxy and the follower ranks' loop: one ModelRunner per rank, one plan.

Rank 0 runs the Engine (scheduler, block manager, stop rules) unchanged; its `runner` is a
`LeaderRunner` around its own ModelRunner. `submit(plan)` first broadcasts the pickled plan
to the followers over the control group (gloo, `broadcast_object_list`), then submits it
locally; every rank's ModelRunner applies the same table-row updates in the same order, runs
the same forwards on its share of the heads (the all-reduces inside pair them up) and samples
the same ids from the same gathered logits. Only rank 0's result is read (`collect`); a
follower collects its own and drops it, keeping its drawn ids on its device for the next plan's
deferred inputs (overlap scheduling).

Unseeded draws: a fresh generator gets a nondeterministic seed, which would differ per rank;
the proxy gives every unseeded draw key one seed drawn on rank 0 before the broadcast, so all
ranks draw the same (still unseeded from the caller's view).

Failure: before each submit the proxy checks the follower processes it spawned; a collective
that fails (gloo: the peer closed its socket; NCCL or a hung peer: the group's timeout) becomes
a `TensorParallelError` naming the rank, and every later call raises it at once, so the
engine fails the requests with that one line instead of hanging. Commands: ("submit", plan),
("discard",), ("logits", ids) (a prompt's logits from a private cache: tests, checks),
("stop",). This module does not spawn processes or create groups (tp_engine.py).
"""
from __future__ import annotations

import dataclasses
import random
import time

import torch
import torch.distributed as dist

from llm_playground.model.engine.step_plan import StepPlan, StepResult


class TensorParallelError(RuntimeError):
    """A tensor-parallel rank is gone or stopped answering; the run cannot go on."""


class LeaderRunner:
    """Rank 0's runner: broadcasts each command to the followers, then runs it locally."""

    def __init__(self, runner, ctrl_group, world: int, timer, procs=()) -> None:
        self.runner = runner
        self.ctrl = ctrl_group
        self.world = world
        self.timer = timer
        self.procs = list(procs)          # (rank, multiprocessing.Process) we spawned
        self.dead: str | None = None
        self._seeds: dict[tuple[int, int], int] = {}
        self._rng = random.SystemRandom()
        self.last_comm_s = 0.0            # collectives' time since the engine last read it
        self.last_comm_calls = 0
        self.last_broadcast_s = 0.0       # the plan's broadcast, last submit

    def __getattr__(self, name):          # bytes_per_block, kv, model, attention_weights, ...
        return getattr(self.runner, name)

    def _check(self) -> None:
        if self.dead is not None:
            raise TensorParallelError(self.dead)
        for rank, proc in self.procs:
            if not proc.is_alive():
                self.dead = (f"tensor-parallel rank {rank} (pid {proc.pid}) exited with code "
                             f"{proc.exitcode}; the run cannot go on (restart the engine)")
                raise TensorParallelError(self.dead)

    def _broadcast(self, msg: tuple) -> None:
        self._check()
        t0 = time.perf_counter()
        try:
            dist.broadcast_object_list([msg], src=0, group=self.ctrl)
        except Exception as e:  # noqa: BLE001  gloo/NCCL raise several kinds
            self._fail("sending the step plan", e)
        self.last_broadcast_s = time.perf_counter() - t0

    def _fail(self, what: str, e: BaseException):
        self._check()                     # a spawned rank that died says so by name
        detail = (str(e).strip().splitlines() or [""])[0]
        detail = detail.rsplit("] ", 1)[-1][:80]     # gloo prefixes its source file:line
        self.dead = (f"tensor parallel: a rank stopped answering while {what}; the run cannot "
                     f"go on (restart the engine) [{type(e).__name__}: {detail}]")
        raise TensorParallelError(self.dead) from e

    def _seeded(self, plan: StepPlan) -> StepPlan:
        """The plan with every unseeded draw given its key's one shared seed."""
        for b in plan.batches:
            for req in b.logits:
                if any(d.seed is None for d in req.draws):
                    req.draws = [d if d.seed is not None else dataclasses.replace(
                        d, seed=self._seeds.setdefault(d.key, self._rng.randrange(2**62)))
                        for d in req.draws]
        for key in plan.released_keys:
            self._seeds.pop(key, None)
        return plan

    def submit(self, plan: StepPlan) -> None:
        """Broadcast the plan, then launch it on rank 0's shard."""
        plan = self._seeded(plan)
        self._broadcast(("submit", plan))
        try:
            self.runner.submit(plan)
        except TensorParallelError:
            raise
        except Exception as e:  # noqa: BLE001
            if _is_comm_error(e):
                self._fail("running the step", e)
            raise

    def collect(self) -> StepResult:
        """Rank 0's result of the oldest submitted step (the followers drop theirs)."""
        try:
            result = self.runner.collect()
        except Exception as e:  # noqa: BLE001
            if _is_comm_error(e):
                self._fail("collecting the step", e)
            raise
        seconds, calls = self.timer.take()    # a call may collect two steps: add them up
        self.last_comm_s += seconds
        self.last_comm_calls += calls
        return result

    def discard_in_flight(self) -> None:
        """Drop the steps in flight on every rank (after a fault)."""
        self.runner.discard_in_flight()
        if self.dead is None:
            try:
                self._broadcast(("discard",))
            except TensorParallelError:
                pass

    @torch.inference_mode()
    def prompt_logits(self, ids: list[int]) -> torch.Tensor:
        """(T, V) float32 logits of every position of `ids`, computed by all ranks together
        in a private cache (not the engine's)."""
        self._broadcast(("logits", list(ids)))
        try:
            return private_logits(self.runner.model, ids)
        except Exception as e:  # noqa: BLE001
            self._fail("computing logits", e)
        finally:
            self.timer.take()             # not a step's: keep it out of the next report

    def close(self, timeout_s: float = 10.0) -> None:
        """Tell the followers to stop and wait for the processes we spawned."""
        if self.dead is None:
            try:
                self._broadcast(("stop",))
            except TensorParallelError:
                pass
        self.dead = self.dead or "the tensor-parallel engine was closed"
        for _, proc in self.procs:
            proc.join(timeout_s)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout_s)


def _is_comm_error(e: BaseException) -> bool:
    """A failed collective (gloo / NCCL), not a model error."""
    dist_err = getattr(dist, "DistError", None)
    if dist_err is not None and isinstance(e, dist_err):
        return True
    text = str(e)
    return any(s in text for s in ("Connection closed", "Connection reset", "Timed out",
                                   "timed out", "gloo", "NCCL", "Broken pipe"))


@torch.inference_mode()
def private_logits(model, ids: list[int]) -> torch.Tensor:
    """All positions' logits (T, V) of one plain forward over `ids` in a fresh one-block cache."""
    from llm_playground.kernels.mask import DENSE
    from llm_playground.model.network.batch import AttentionBatch
    from llm_playground.model.network.kv_cache import KVCache
    cfg, dev, T = model.config, model.embed_tokens.device, len(ids)
    kv = KVCache(cfg.num_layers, 1, T, cfg.num_kv_heads, cfg.head_dim, model.dtype, dev)
    batch = AttentionBatch(positions=torch.arange(T, device=dev),
                           slot_mapping=torch.arange(T, device=dev),
                           cu_seqlens_q=torch.tensor([0, T], dtype=torch.int32, device=dev),
                           context_lens=torch.tensor([T], dtype=torch.int32, device=dev),
                           block_tables=torch.zeros(1, 1, dtype=torch.int32, device=dev),
                           max_q_len=T, max_context_len=T, mask=DENSE, num_decodes=0)
    model.ensure_positions(T)
    hidden = model(torch.tensor(ids, device=dev), batch, kv)                  # (T, H)
    return model.compute_logits(hidden)                                       # (T, V) f32


def follower_loop(runner, ctrl_group) -> None:
    """A follower rank: run rank 0's commands until ("stop",). Raises when a collective fails
    (rank 0 died: the caller exits with an error)."""
    while True:
        box = [None]
        dist.broadcast_object_list(box, src=0, group=ctrl_group)
        cmd = box[0]
        if cmd[0] == "submit":
            runner.submit(cmd[1])
            runner.collect()                 # rank 0 reads its own; ids stay on the device
        elif cmd[0] == "discard":
            runner.discard_in_flight()
        elif cmd[0] == "logits":
            private_logits(runner.model, cmd[1])
        elif cmd[0] == "stop":
            return
        else:
            raise RuntimeError(f"tensor parallel: unknown command {cmd[0]!r} from rank 0")
