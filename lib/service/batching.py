"""Batched query embedding: concurrent requests share the model's forward passes.

Each request decodes and transforms its image on a thread of its own (OpenCV and
NumPy release the GIL), then queues it. One worker thread takes the first query
waiting, gathers more for up to ``wait_seconds`` while other queries are still being
decoded (never longer than that, and not at all when none are on their way), up to the
vectorizer's ``batch_size``, and embeds them in one
:meth:`~lib.embedding.vectorizer.Vectorizer.transform` call. Row ``i`` of a batch is the
embedding query ``i`` gets alone: the same ETL, feature engineering and saved model.

While queries queue up (a batch in flight, or more waiting), batches go to OpenVINO's
throughput streams instead (:mod:`lib.embedding.streams`): the worker starts one and
gathers the next while it runs, so both cores stay busy under load; a lone query
still runs in latency mode, over every core. The throughput model is compiled in the
background the first time queries queue up, so it never delays a start or an answer.
"""
import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from lib.embedding import Vectorizer

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    """One query waiting for the model."""

    vectorizer: Vectorizer
    image: np.ndarray                            # (S, S, 3) float32, preprocessed
    future: concurrent.futures.Future


class BatchingEmbedder:
    """Embeds queries from concurrent requests in batches, on one worker thread.

    Args:
        wait_seconds: Longest wait for more queries once one is ready (``service.
            batch_wait_ms``).
        streams: Run batches on throughput streams while queries queue up
            (``service.throughput_streams``); False: one batch at a time.
    """

    def __init__(self, wait_seconds: float, streams: bool = True):
        if wait_seconds < 0:
            raise ValueError(f"wait_seconds must be >= 0, got {wait_seconds}")
        self._wait = wait_seconds
        self._use_streams = streams
        self._jobs: "queue.Queue[Optional[_Job]]" = queue.Queue()
        self._lock = threading.Lock()
        self._arriving = 0                       # queries being decoded right now
        self._in_flight = 0                      # batches on the throughput streams
        self._idle = threading.Condition(self._lock)
        self._streamed: "weakref.WeakKeyDictionary[Vectorizer, object]" = \
            weakref.WeakKeyDictionary()          # vectorizer -> its streams, once compiled
        self._stats = {"batches": 0, "queries": 0, "largest_batch": 0, "streamed_batches": 0}
        self._thread = threading.Thread(target=self._work, name="embedder", daemon=True)
        self._thread.start()

    async def embed(self, vectorizer: Vectorizer,
                    prepare: Callable[[], np.ndarray]) -> np.ndarray:
        """Prepares a query off the event loop, then embeds it in the next batch.

        Args:
            vectorizer: The model of the engine that answers this request.
            prepare: Decodes and transforms the query (blocking): returns its (S, S, 3)
                ``float32`` feature-engineered image. Its exceptions (a bad upload)
                reach the caller unchanged.

        Returns:
            The query's (D,) ``float32`` embedding.
        """
        with self._lock:
            self._arriving += 1
        try:
            image = await asyncio.to_thread(prepare)
            future = self.submit(vectorizer, image)
        finally:
            with self._lock:
                self._arriving -= 1
        return await asyncio.wrap_future(future)

    def submit(self, vectorizer: Vectorizer, image: np.ndarray) -> concurrent.futures.Future:
        """Queues one prepared (S, S, 3) ``float32`` image; its future gives (D,)."""
        if not self._thread.is_alive():
            raise RuntimeError("the embedder is closed")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put(_Job(vectorizer, image, future))
        return future

    def warm(self, vectorizer: Vectorizer) -> Optional[threading.Thread]:
        """Compiles the vectorizer's throughput streams in the background, so that the
        first burst of queries finds them ready; the thread compiling, if one started."""
        if not self._use_streams:
            return None
        with self._lock:
            if vectorizer in self._streamed:
                return None
            self._streamed[vectorizer] = None
        thread = threading.Thread(target=self._compile, args=(weakref.ref(vectorizer),),
                                  name="compile-streams", daemon=True)
        thread.start()
        return thread

    def stats(self) -> Dict[str, float]:
        """Batches run, queries embedded, the largest batch and the mean batch size."""
        with self._lock:
            stats: Dict[str, float] = dict(self._stats)
        stats["mean_batch"] = stats["queries"] / stats["batches"] if stats["batches"] else 0.0
        return stats

    def close(self) -> None:
        """Embeds what is queued, then stops the worker thread."""
        self._jobs.put(None)
        self._thread.join()
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0)

    def _work(self) -> None:
        """The worker: gathers a batch, embeds it, repeats until closed."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch, closing = self._gather(job)
            self._run(batch)
            if closing:
                return

    def _gather(self, first: _Job) -> "tuple[List[_Job], bool]":
        """The first job plus those that arrive in time; whether close() was seen."""
        batch = [first]
        deadline = time.monotonic() + self._wait
        while len(batch) < first.vectorizer.batch_size:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                with self._lock:
                    arriving = self._arriving
                if remaining <= 0 or not arriving:
                    break
                try:
                    job = self._jobs.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _run(self, batch: List[_Job]) -> None:
        """Embeds a batch, one call per model (several only across a swap)."""
        groups: Dict[int, List[_Job]] = {}
        for job in batch:
            if job.future.set_running_or_notify_cancel():    # skip requests given up
                groups.setdefault(id(job.vectorizer), []).append(job)
        for jobs in groups.values():
            images = np.stack([job.image for job in jobs])    # (B, S, S, 3)
            streamed = self._streams_of(jobs[0].vectorizer) if self._busy() else None
            if streamed is not None:
                self._start(streamed, images, jobs)
                continue
            try:
                vectors = jobs[0].vectorizer.transform(images)  # (B, D)
            except Exception as err:  # pylint: disable=broad-exception-caught
                # Not swallowed: every waiting request receives the exception itself.
                self._deliver(jobs, err)
                continue
            self._deliver(jobs, vectors)

    def _busy(self) -> bool:
        """Whether queries queue up: a batch in flight, or more waiting."""
        with self._lock:
            return self._in_flight > 0 or not self._jobs.empty()

    def _streams_of(self, vectorizer: Vectorizer):
        """The vectorizer's throughput streams, or None (not compiled yet: compiling
        starts in the background; or a runtime without them)."""
        with self._lock:
            if vectorizer in self._streamed or not self._use_streams:
                return self._streamed.get(vectorizer)
        self.warm(vectorizer)
        return None

    def _compile(self, vectorizer_ref: "weakref.ref[Vectorizer]") -> None:
        """Compiles a vectorizer's throughput streams, off the worker thread."""
        vectorizer = vectorizer_ref()
        if vectorizer is None:
            return
        streamed = vectorizer.streamed()
        with self._lock:
            self._streamed[vectorizer] = streamed

    def _start(self, streamed, images: np.ndarray, jobs: List[_Job]) -> None:
        """Starts a batch on the throughput streams; its requests get their vectors later."""
        with self._lock:
            self._in_flight += 1

        def done(result) -> None:
            self._deliver(jobs, result, streamed=True)
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

        try:
            streamed.start(images, done)
        except Exception as err:  # pylint: disable=broad-exception-caught
            done(err)             # not swallowed: every waiting request receives it

    def _deliver(self, jobs: List[_Job], result, streamed: bool = False) -> None:
        """Gives each job its (D,) vector, or every job the exception that stopped them."""
        if isinstance(result, BaseException):
            for job in jobs:
                job.future.set_exception(result)
            return
        for job, vector in zip(jobs, result):
            job.future.set_result(vector.copy())              # (D,)
        with self._lock:
            self._stats["batches"] += 1
            self._stats["queries"] += len(jobs)
            self._stats["streamed_batches"] += int(streamed)
            self._stats["largest_batch"] = max(self._stats["largest_batch"], len(jobs))
        logger.debug("embedded a batch of %d%s", len(jobs), " (streamed)" if streamed else "")
