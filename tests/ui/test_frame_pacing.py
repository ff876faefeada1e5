"""The frame pacer (playground/frame_pacing.py) and the engine worker's use of it.

Oracles: the pacer's rule written out (interval = clamp(smoothed UI CPU per picture / budget,
min, max), a sample after a pause not counted), with fake CPU and wall clocks; and the worker
posting ChatProgress at the pacer's interval while a real (tiny) engine decodes under a fake
wall clock, every token still reaching the final ChatFinished.
"""
from __future__ import annotations

import pytest
from tiny_engine import tiny_engine

from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.playground import frame_pacing
from llm_playground.playground.engine_worker import EngineWorker
from llm_playground.playground.frame_pacing import FramePacer
from llm_playground.playground.messages import CacheUpdated, ChatFinished, ChatProgress


class Clocks:
    """A UI thread's CPU clock and a wall clock that the test moves by hand."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.wall = 100.0

    def picture(self, pacer: FramePacer, cpu_s: float, wall_s: float) -> None:
        """The UI spent `cpu_s` of its own CPU over `wall_s`, then a picture arrived."""
        self.cpu += cpu_s
        self.wall += wall_s
        pacer.picture_shown()


def make(**kwargs) -> tuple[FramePacer, Clocks]:
    clocks = Clocks()
    return FramePacer(cpu_clock=lambda: clocks.cpu, wall_clock=lambda: clocks.wall, **kwargs), clocks


def test_interval_is_the_cost_over_the_budget_within_the_bounds():
    pacer, clocks = make(min_interval_s=0.1, max_interval_s=0.25, budget=0.05)
    assert pacer.interval() == 0.1                      # nothing measured yet
    clocks.picture(pacer, 0.0, 0.1)                     # the first picture: no sample
    assert pacer.cost_s is None and pacer.interval() == 0.1
    for _ in range(40):                                 # a steady 8 ms per picture
        clocks.picture(pacer, 0.008, 0.15)
    assert pacer.cost_s == pytest.approx(0.008)
    assert pacer.interval() == pytest.approx(0.008 / 0.05)          # 0.16 s, inside the bounds
    for _ in range(40):                                 # a cheap UI: the fastest rate
        clocks.picture(pacer, 0.001, 0.1)
    assert pacer.interval() == 0.1
    for _ in range(40):                                 # a costly one: no slower than the floor
        clocks.picture(pacer, 0.05, 0.25)
    assert pacer.interval() == 0.25


def test_one_costly_picture_moves_the_interval_by_the_smoothing_weight():
    pacer, clocks = make(min_interval_s=0.0, max_interval_s=10.0, budget=0.1)
    clocks.picture(pacer, 0.0, 0.1)
    clocks.picture(pacer, 0.01, 0.1)
    assert pacer.cost_s == pytest.approx(0.01)
    clocks.picture(pacer, 0.05, 0.1)
    expected = (1 - frame_pacing.SMOOTHING) * 0.01 + frame_pacing.SMOOTHING * 0.05
    assert pacer.cost_s == pytest.approx(expected)
    assert pacer.interval() == pytest.approx(expected / 0.1)


def test_a_pause_is_not_a_sample():
    """Between two answers the UI's CPU is the user's doing (typing, switching tabs): a picture
    after a pause longer than max_interval_s + 1 s starts afresh instead of counting it."""
    pacer, clocks = make(min_interval_s=0.1, max_interval_s=0.25, budget=0.05)
    clocks.picture(pacer, 0.0, 0.1)
    clocks.picture(pacer, 0.002, 0.1)
    before = pacer.cost_s
    clocks.picture(pacer, 3.0, 30.0)                    # 3 s of CPU over a 30 s pause
    assert pacer.cost_s == before and pacer.interval() == 0.1
    clocks.picture(pacer, 0.002, 0.1)                   # and the next one counts again
    assert pacer.cost_s == pytest.approx(0.002)


@pytest.mark.parametrize("kwargs", [{"budget": 0.0}, {"budget": 1.5}, {"min_interval_s": -0.1},
                                    {"min_interval_s": 0.5, "max_interval_s": 0.2}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        FramePacer(**kwargs)


def progress_posts(cost_per_picture_s: float, steps: int = 60, step_s: float = 0.05) -> tuple[int, list]:
    """Decode `steps` tokens on the tiny engine through the worker, each step `step_s` of wall
    time on the worker's clock; the UI's pictures cost `cost_per_picture_s` on the pacer's."""
    engine = tiny_engine(num_blocks=64)
    wall = [0.0]
    posted: list = []
    worker = EngineWorker(posted.append, factory=None, clock=lambda: wall[0])
    clocks = Clocks()
    worker.pacer = FramePacer(cpu_clock=lambda: clocks.cpu, wall_clock=lambda: clocks.wall)
    worker.engine = engine
    worker._start_chat(1, [5, 6, 7, 8], SamplingParams(temperature=0.0, max_tokens=steps))
    seen = 0
    while engine.has_unfinished():
        worker._handle(engine.step())
        wall[0] += step_s
        for msg in posted[seen:]:
            if isinstance(msg, CacheUpdated):             # the UI handled a picture
                clocks.picture(worker.pacer, cost_per_picture_s, step_s)
        seen = len(posted)
    return sum(isinstance(m, ChatProgress) for m in posted), posted


def test_the_worker_posts_at_the_pacers_interval_and_loses_no_token():
    cheap, cheap_posts = progress_posts(0.001)          # 1 ms a picture: ten a second
    costly, costly_posts = progress_posts(0.05)         # 50 ms a picture: four a second
    # 60 steps of 50 ms = 3 s: about 30 pictures at 0.1 s, about 12 at 0.25 s
    assert 25 <= cheap <= 32 and 10 <= costly <= 14, (cheap, costly)
    for posts in (cheap_posts, costly_posts):
        done = [m for m in posts if isinstance(m, ChatFinished)]
        assert len(done) == 1 and len(done[0].token_ids[0]) == 60     # every token, at the end
