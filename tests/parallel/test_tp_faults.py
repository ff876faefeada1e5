"""A killed tensor-parallel rank ends the run with a clear error, within the timeout, not a hang.

Two ways a dead follower is seen: rank 0 checks the processes it spawned before each step (the
message names the rank, its pid and exit code), and a collective with a dead peer fails (gloo:
its socket closed; the group's timeout is the backstop for a hung one). Both are exercised: the
second by hiding the processes from the check. What you should see: the request finishes with
FinishReason.ERROR carrying that one line, `generate` raises RequestError with it, in well under
the 20 s timeout; later requests fail at once with the same line; close() returns.
A hung follower (stopped, not exited) fails the next step once rank 0's send times out
(ParallelConfig.timeout_s). Also: a follower whose rank 0 process is killed exits by itself.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from llm_playground.model.engine.conveniences import RequestError
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.parallel.tp_engine import ParallelConfig, start_tensor_parallel

from tp_helpers import engine_config, tiny_source

TIMEOUT = 20.0
PARAMS = SamplingParams(max_tokens=6, temperature=0.0)


@pytest.mark.parametrize("seen_by", ["process check", "collective"])
def test_killed_follower_gives_a_clear_error(seen_by):
    tp = start_tensor_parallel(tiny_source(4, 2), 2, engine_config(),
                               ParallelConfig(timeout_s=TIMEOUT))
    try:
        assert len(tp.generate([1, 2, 3, 4, 5], PARAMS)) == 6
        rank, proc = tp.runner.procs[0]
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)
        if seen_by == "collective":
            tp.runner.procs = []
        t0 = time.monotonic()
        with pytest.raises(RequestError) as err:
            tp.generate([7, 8, 9], PARAMS)
        took = time.monotonic() - t0
        assert took < TIMEOUT, took
        text = str(err.value)
        if seen_by == "process check":
            assert f"tensor-parallel rank 1 (pid {proc.pid}) exited with code -9" in text
        else:
            assert "tensor parallel: a rank stopped answering" in text, text
        assert "cannot go on" in text
        t0 = time.monotonic()
        with pytest.raises(RequestError, match="cannot go on"):
            tp.generate([1, 2], PARAMS)
        assert time.monotonic() - t0 < 1.0
    finally:
        tp.close()


def test_follower_exits_when_rank0_is_killed(tmp_path):
    pidfile = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = {sys.path!r}
        from tp_helpers import engine_config, tiny_source
        from llm_playground.model.parallel.tp_engine import start_tensor_parallel
        if __name__ == "__main__":
            tp = start_tensor_parallel(tiny_source(4, 2), 2, engine_config())
            open({str(pidfile)!r}, "w").write(str(tp.runner.procs[0][1].pid))
            time.sleep(120)
        """)
    rank0 = subprocess.Popen([sys.executable, "-c", script], cwd=os.path.dirname(__file__))
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        follower = int(pidfile.read_text())
        rank0.kill()
        rank0.wait(10)
        t0 = time.monotonic()
        while time.monotonic() - t0 < TIMEOUT and _alive(follower):
            time.sleep(0.2)
        assert not _alive(follower), "the follower outlived its rank 0"
    finally:
        rank0.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_hung_follower_fails_the_step_after_the_timeout():
    """A follower that stops answering without exiting (SIGSTOP): rank 0's send of the plan
    gives up after ParallelConfig.timeout_s and the request fails with the one line."""
    timeout = 4.0
    tp = start_tensor_parallel(tiny_source(4, 2), 2, engine_config(),
                               ParallelConfig(timeout_s=timeout))
    try:
        assert len(tp.generate([1, 2, 3], PARAMS)) == 6
        pid = tp.runner.procs[0][1].pid
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(RequestError, match="a rank stopped answering .*cannot go on"):
            tp.generate([4, 5, 6], PARAMS)
        took = time.monotonic() - t0
        assert timeout * 0.9 < took < timeout + 10, took
        os.kill(pid, signal.SIGCONT)
    finally:
        tp.close()
