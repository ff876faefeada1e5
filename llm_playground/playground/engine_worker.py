"""The one thread that owns the engine: loads the model, steps the engine, posts messages.

Every engine call (add_request, abort, step, set_pattern, attention_weights, cache_report) happens
on this thread, so the engine needs no locks and the UI thread never blocks on it. The UI talks
to it by putting commands on a queue (`chat`, `cancel`, `set_pattern`, `set_speculate`,
`attention`, `load_test`);
the thread answers with the dataclass messages of playground/messages.py. It polls the worker's
`is_cancelled` between steps and while idle (every 0.1 s), so the app can always quit.

It keeps, per chat generation, the text, ids and figures so far (playground/generation.py), so a
cancelled or failed generation keeps its output. Live pictures (progress, the cache) go out at
most every PUBLISH_INTERVAL_S; what ends something goes out at once. The load test
(playground/load_test.py) may run on an engine of its own (a small pool on the same model),
stepped here too. The model loads on a thread of its own while this one polls cancellation
(playground/background_load.py). What it does not do: draw anything, or decide what the user sees.
"""
from __future__ import annotations

import queue
import time
from dataclasses import replace
from typing import Any, Callable

from textual.worker import get_current_worker

from llm_playground.model.engine.outcomes import FinishReason
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.playground.background_load import progress_message, run_factory
from llm_playground.playground.error_hints import hint, hint_text, one_line
from llm_playground.playground.frame_pacing import MAX_INTERVAL_S, FramePacer
from llm_playground.playground.generation import Generation
from llm_playground.playground.load_test import LoadTest
from llm_playground.playground.messages import (AttentionReady, CacheUpdated, ChatFinished, ChatProgress,
                                 ChoicesUpdated, EngineNotice, LoadFailed, ModelInfo, ModelReady,
                                 PatternChanged, SpeculateChanged)

ProgressFn = Callable[..., None]
# A factory loads the model and builds the engine on the worker thread: (progress) -> (info, engine).
EngineFactory = Callable[[ProgressFn], "tuple[ModelInfo, Any]"]

# Live pictures (chat progress, the cache) go to the UI at most this often, in real time: ten a
# second reads as smooth streaming. Every picture costs the UI thread layout and rendering work
# that shares the GIL and the cores with the engine (per step, it slowed decode by a quarter on
# 2 cores), so the pacer (playground/frame_pacing.py) spaces them further when the UI's measured
# cost per picture needs it. A first token, a finished answer and the idle engine's last picture
# are posted at once.
PUBLISH_INTERVAL_S = 0.1
IDLE_POLL_S = 0.1          # how often an idle worker checks for commands and cancellation
MAX_STEP_FAILURES = 3      # consecutive failed steps before the worker stops stepping


class EngineWorker:
    """Owns the engine on a Textual thread worker named "engine"."""

    def __init__(self, post: Callable[[Any], Any], factory: EngineFactory,
                 publish_interval_s: float = PUBLISH_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._post = post                      # thread-safe: App.post_message
        self._factory = factory
        self._commands: queue.Queue = queue.Queue()
        # the app calls pacer.picture_shown() on each picture; _publish spaces them by its interval
        self.pacer = FramePacer(min_interval_s=publish_interval_s,
                                max_interval_s=max(publish_interval_s, MAX_INTERVAL_S))
        self._clock = clock                    # real time for the publishing rate (not the engine's)
        self._last_publish = float("-inf")
        self._cache_stale = False              # steps not yet shown in a CacheUpdated
        self._last_report: Any = None          # the newest StepReport (its cache is the picture)
        self._last_is_load = False             # ... from the load test's own engine
        self._gens: dict[int, Generation] = {}         # ticket -> generation
        self._by_request: dict[int, int] = {}          # engine request id -> ticket
        self._ignored: set[int] = set()                # aborted requests whose late outputs we drop
        self._loadtest: LoadTest | None = None         # the KV tab's load test, the latest one
        self.engine: Any = None
        self.info: ModelInfo | None = None

    # ---- called from the UI thread -------------------------------------------------------
    def chat(self, ticket: int, prompt_ids: list[int], params: SamplingParams) -> None:
        """Queue a chat generation of `prompt_ids` under `ticket`."""
        self._commands.put(("chat", ticket, list(prompt_ids), params))

    def cancel(self, ticket: int) -> None:
        """Queue the abort of generation `ticket`."""
        self._commands.put(("cancel", ticket))

    def set_pattern(self, spec: str) -> None:
        """Queue a switch of the engine's attention pattern to `spec`."""
        self._commands.put(("pattern", spec))

    def set_speculate(self, spec: str) -> None:
        """Queue a switch of the engine's speculative decoding to `spec` (between steps)."""
        self._commands.put(("speculate", spec))

    def attention(self, prompt_ids: list[int], layer: int, head: int) -> None:
        """Queue a request for layer/head attention weights over `prompt_ids`."""
        self._commands.put(("attention", list(prompt_ids), layer, head))

    def load_test(self, n: int, prompt_len: int = 48, max_tokens: int = 64, seed: int = 0) -> None:
        """Queue a load test of `n` synthetic requests."""
        self._commands.put(("load", n, prompt_len, max_tokens, seed))

    @property
    def load_engine(self) -> Any:
        """The engine the latest load test runs on (the chat's, or its own small pool), or None."""
        return self._loadtest.engine if self._loadtest is not None else None

    @property
    def load_running(self) -> bool:
        """True while a load test has requests queued or running."""
        return self._loadtest is not None and self._loadtest.active

    # ---- the worker thread ---------------------------------------------------------------
    def run(self) -> None:
        """Body of the thread worker: load, then serve commands and step until cancelled."""
        worker = get_current_worker()
        loaded = self._load(worker)
        if loaded is None:
            return
        self.info, self.engine = loaded
        self._post(ModelReady(self.info))
        self._post_cache(None)
        failures = 0
        while not worker.is_cancelled:
            load = self._loadtest if self._loadtest is not None and self._loadtest.active else None
            busy = self._has_work() or load is not None
            if not busy:
                self._publish(force=True)      # the idle engine's last picture
            self._drain(block=not busy)
            if load is not None:
                load.admit_one()
            engines = [self.engine] if self._has_work() else []
            if load is not None and load.own_pool and _has_work(load.engine):
                engines.append(load.engine)
            for engine in engines:
                if worker.is_cancelled:
                    break
                try:
                    report = engine.step()
                    failures = 0
                except Exception as error:
                    failures += 1
                    self._fail_all(f"the engine failed a step ({one_line(error)})")
                    if failures >= MAX_STEP_FAILURES:
                        self._post(EngineNotice("The engine keeps failing; restart the playground "
                                                "(try a smaller --kv-blocks or --device cpu).", "error"))
                        return
                    break
                if engine is self.engine:
                    self._handle(report)
                else:
                    self._handle_load(report)

    def _load(self, worker: Any) -> "tuple[ModelInfo, Any] | None":
        """Run the factory off this thread, polling cancellation (playground/background_load.py):
        quitting during a slow fetch or load does not wait for it. A failure posts LoadFailed."""
        outcome = run_factory(self._factory, self._load_progress, lambda: worker.is_cancelled,
                              IDLE_POLL_S)
        if outcome is None:
            return None
        value, error = outcome
        if error is not None:
            self._post(LoadFailed(one_line(error)))
            return None
        return value

    def _has_work(self) -> bool:
        return _has_work(self.engine)

    def _load_progress(self, *args: Any, **kwargs: Any) -> None:
        """Post one of the loader's progress calls as LoadProgress (background_load.py)."""
        self._post(progress_message(*args, **kwargs))

    def _drain(self, block: bool) -> None:
        try:
            cmd = self._commands.get(timeout=IDLE_POLL_S) if block else self._commands.get_nowait()
        except queue.Empty:
            return
        while True:
            self._run_command(cmd)
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return

    def _run_command(self, cmd: tuple) -> None:
        kind = cmd[0]
        try:
            if kind == "chat":
                self._start_chat(*cmd[1:])
            elif kind == "cancel":
                self._cancel(cmd[1])
            elif kind == "pattern":
                self.engine.set_pattern(cmd[1])
                self.info.pattern = cmd[1]
                self._post(PatternChanged(cmd[1]))
            elif kind == "speculate":
                self.engine.set_speculate(cmd[1])
                self._post(SpeculateChanged(str(self.engine.speculate)))
            elif kind == "attention":
                _, ids, layer, head = cmd
                weights = self.engine.attention_weights(ids, layer, head)
                self._post(AttentionReady(layer, head, [list(map(float, r)) for r in weights], len(ids)))
            elif kind == "load":
                self._start_load(*cmd[1:])
        except Exception as error:  # bad input for one command: tell the user, keep serving
            self._post(EngineNotice(hint(kind, error), "error"))

    def _start_chat(self, ticket: int, prompt_ids: list[int], params: SamplingParams) -> None:
        gen = Generation(ticket, -1, params.n, len(prompt_ids))
        try:
            gen.request_id = self.engine.add_request(prompt_ids, params)
        except Exception as error:
            gen.reasons = [FinishReason.ERROR] * gen.n
            gen.error = hint("chat", error)
            self._finish(gen)
            return
        self._gens[ticket] = gen
        self._by_request[gen.request_id] = ticket

    def _cancel(self, ticket: int) -> None:
        gen = self._gens.get(ticket)
        if gen is None:
            return
        try:
            self.engine.abort(gen.request_id)
        finally:
            gen.reasons = [r or FinishReason.ABORTED for r in gen.reasons]
            self._ignored.add(gen.request_id)
            self._finish(gen)

    def _start_load(self, n: int, prompt_len: int, max_tokens: int, seed: int) -> None:
        """Start the load test (playground/load_test.py): on the chat's pool when the load fills
        it, else on a small pool of its own."""
        if self._loadtest is not None:
            self._loadtest.abort()
        self._loadtest = LoadTest(self.engine, n, prompt_len, max_tokens, seed)
        st = self._loadtest.stats
        where = (f"on a pool of its own ({st.pool_blocks} blocks, so that it fills up; the chat's "
                 f"has {st.chat_pool_blocks})" if st.own_pool else f"on the chat's pool ({st.pool_blocks} blocks)")
        self._post(EngineNotice(f"Starting {n} synthetic requests, one per step, {where}: watch "
                                "the KV cache tab.", "information"))

    def _handle_load(self, report: Any) -> None:
        """A step of the load test's own engine: count it; its pool is the picture to show."""
        self._loadtest.observe(report)
        self._last_report, self._last_is_load, self._cache_stale = report, True, True
        self._publish()

    def _handle(self, report: Any) -> None:
        """Take one step's report: outputs into their generations, figures updated; finished
        generations are posted at once, live pictures at the publishing rate."""
        decoded: dict[int, int] = {}
        fresh = {t for t, g in self._gens.items() if not any(g.ids)}   # no token before this step
        load = self._loadtest if self._loadtest is not None and not self._loadtest.own_pool else None
        synthetic = load.request_ids.copy() if load is not None else set()
        if load is not None:
            load.observe(report)
        for out in report.outputs:
            rid = out.request_id
            if rid in synthetic:
                continue
            ticket = self._by_request.get(rid)
            if ticket is None or rid in self._ignored:
                continue
            gen = self._gens[ticket]
            decoded[ticket] = decoded.get(ticket, 0) + gen.add_output(out)
            if out.finished and out.error:
                gen.error = hint_text("chat", out.error)
        worked = {s.request_id for s in report.sequences if s.status in ("running", "finished")}
        first_token = False
        for ticket in list(self._gens):
            gen = self._gens[ticket]
            gen.absorb(report, decoded.get(ticket, 0), ticket in fresh and gen.request_id in worked)
            if gen.done:
                self._finish(gen)
            elif ticket in fresh and any(gen.ids):
                first_token = True              # time to first token: show it now
        own = self._loadtest is not None and self._loadtest.own_pool and self._loadtest.active
        if not own:                 # while the load test runs on its own pool, that is the picture
            self._last_report, self._last_is_load, self._cache_stale = report, False, True
        self._publish(force=first_token)

    def _publish(self, force: bool = False) -> None:
        """Post each live generation's progress and the cache picture, unless the last ones
        went out less than the publishing interval ago (`force`: now)."""
        now = self._clock()
        if not force and now - self._last_publish < self.pacer.interval():
            return
        if not self._cache_stale and not any(g.changed for g in self._gens.values()):
            return
        self._last_publish = now
        for gen in self._gens.values():
            if gen.changed:
                gen.changed = False
                self._post(ChatProgress(gen.ticket, tuple(gen.texts), tuple(map(tuple, gen.ids)),
                                        gen.snapshot(), tuple(gen.reasons)))
                self._post_choices(gen)
        if self._cache_stale:
            self._cache_stale = False
            self._post_cache(self._last_report)

    def _post_choices(self, gen: Generation) -> None:
        """What the sampler considered so far, when the request asked (params.logprobs)."""
        if any(gen.choices):
            self._post(ChoicesUpdated(gen.ticket, tuple(map(tuple, gen.choices))))

    def _finish(self, gen: Generation) -> None:
        self._gens.pop(gen.ticket, None)
        self._by_request.pop(gen.request_id, None)
        self._post_choices(gen)
        self._post(ChatFinished(gen.ticket, tuple(gen.texts), tuple(map(tuple, gen.ids)),
                                gen.snapshot(), tuple(gen.reasons), gen.error))

    def _fail_all(self, why: str) -> None:
        for gen in list(self._gens.values()):
            try:
                self.engine.abort(gen.request_id)
            except Exception:
                pass
            self._ignored.add(gen.request_id)
            gen.reasons = [r or FinishReason.ERROR for r in gen.reasons]
            gen.error = f"{why}; the text so far is kept"
            self._finish(gen)
        if self._loadtest is not None:
            self._loadtest.abort()
        if not self._gens:
            self._post(EngineNotice(why, "error"))

    def _post_cache(self, report: Any) -> None:
        try:
            load = self._loadtest
            if report is None:
                self._post(CacheUpdated(self.engine.cache_report()))
                return
            shows_load = load is not None and (self._last_is_load or not load.own_pool)
            stats = replace(load.stats) if shows_load else None
            self._post(CacheUpdated(report.cache, list(report.sequences), report.num_running,
                                    report.num_waiting, len(load.request_ids) if load else 0, stats,
                                    getattr(report, "parallel", None)))
        except Exception as error:
            self._post(EngineNotice(f"cache report failed: {one_line(error)}", "warning"))


def _has_work(engine: Any) -> bool:
    try:
        return bool(engine.has_unfinished())
    except Exception:
        return False
