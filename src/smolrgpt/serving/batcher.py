"""Dynamic batching for the HTTP service: one worker thread owns the engine.

Request handlers never touch torch. They decode their inputs (PIL/numpy), then `submit` a job to a bounded
queue and await its future. The worker takes the first waiting job, keeps collecting jobs for up to
`batch_wait_ms` (or until `max_batch` are in hand), and answers them with one `engine.ask_batch` call, so
torch calls never run concurrently and concurrent requests share one generate() pass. Jobs with a
different `max_new_tokens` are answered in separate calls of the same round, so a request's answer never
depends on who it was batched with. If a batch fails on one bad request (a prompt longer than the model's
limit, say), its questions are answered one by one so only the bad request gets the error.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from dataclasses import dataclass, field

from smolrgpt.engine import Answer, Question
from smolrgpt.errors import SmolRGPTError


class QueueFull(SmolRGPTError):
    """The batcher's queue is full: the server is busy."""


@dataclass
class Job:
    question: Question
    max_new_tokens: int
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    submitted: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    timings: dict = field(default_factory=dict)


class Batcher:
    """Collects questions from many threads/tasks and answers them in batches on one worker thread."""

    def __init__(self, engine, max_batch: int = 8, batch_wait_ms: float = 10.0, queue_size: int = 64):
        if max_batch < 1 or queue_size < 1 or batch_wait_ms < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and batch_wait_ms >= 0")
        self.engine = engine
        self.max_batch = int(max_batch)
        self.batch_wait = float(batch_wait_ms) / 1000.0
        self.queue_size = int(queue_size)
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=self.queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._in_flight = 0
        self.batches_run = 0
        self.questions_answered = 0
        self.largest_batch = 0

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> "Batcher":
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="smolrgpt-batcher", daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        while True:  # fail whatever is still waiting, so no caller waits forever
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(QueueFull("server is shutting down"))

    @property
    def depth(self) -> int:
        """Questions waiting in the queue plus those being answered now."""
        return self._queue.qsize() + self._in_flight

    # -- submitting ------------------------------------------------------------------------------------
    def submit(self, question: Question, max_new_tokens: int | None = None) -> Job:
        """Queue a question; raises QueueFull at once when `queue_size` questions are already waiting."""
        job = Job(question, int(max_new_tokens or self.engine.max_new_tokens))
        if self._thread is None:  # used without start() (e.g. an app run without its lifespan)
            self.start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull("server busy: queue full") from None
        return job

    async def ask(self, question: Question, max_new_tokens: int | None = None) -> tuple[Answer, dict]:
        """The answer and its timings (queue wait, model time, batch size), awaited without blocking."""
        job = self.submit(question, max_new_tokens)
        answer = await asyncio.wrap_future(job.future)
        return answer, job.timings

    def ask_sync(self, question: Question, max_new_tokens: int | None = None, timeout: float | None = None):
        job = self.submit(question, max_new_tokens)
        return job.future.result(timeout), job.timings

    # -- the worker ------------------------------------------------------------------------------------
    def _collect(self) -> list[Job]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.perf_counter() + self.batch_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:  # once the wait is over, still take whatever is already queued
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(job)
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if not batch:
                continue
            # A job whose caller went away (cancelled future) is dropped here, before any model time.
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]
            self._in_flight = len(live)
            try:
                self._answer(live)
            except BaseException as exc:  # noqa: BLE001 - never leave a caller waiting on a dead worker
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(exc)
            finally:
                self._in_flight = 0

    def _answer(self, jobs: list[Job]) -> None:
        started = time.perf_counter()
        for job in jobs:
            job.started = started
        groups: dict[int, list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.max_new_tokens, []).append(job)
        for max_new_tokens, group in groups.items():
            t0 = time.perf_counter()
            try:
                answers = self.engine.ask_batch([j.question for j in group], max_new_tokens=max_new_tokens)
                results: list = list(answers)
            except Exception as exc:  # noqa: BLE001 - isolate the failing question(s); the rest still get answers
                results = [exc] if len(group) == 1 else [self._answer_alone(j) for j in group]
            model_ms = (time.perf_counter() - t0) * 1000
            self.batches_run += 1
            self.largest_batch = max(self.largest_batch, len(group))
            for job, result in zip(group, results):
                job.timings.update(queue_ms=round((job.started - job.submitted) * 1000, 2),
                                   model_ms=round(model_ms, 2), batch_size=len(group))
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    self.questions_answered += 1
                    job.future.set_result(result)

    def _answer_alone(self, job: Job):
        try:
            return self.engine.ask_batch([job.question], max_new_tokens=job.max_new_tokens)[0]
        except Exception as exc:  # noqa: BLE001
            return exc
