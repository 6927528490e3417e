"""Batched query embedding: concurrent requests share the model's forward passes.

Each request decodes and transforms its image on a thread of its own (OpenCV and
NumPy release the GIL), then queues it. One worker thread takes the first query
waiting, gathers more for up to ``wait_seconds`` while other queries are still being
decoded (never longer than that, and not at all when none are on their way), up to the
vectorizer's ``batch_size``, and embeds them in one
:meth:`~lib.embedding.vectorizer.Vectorizer.transform` call. Row ``i`` of a batch is the
embedding query ``i`` gets alone: the same ETL, feature engineering and saved model.
"""
import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
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
    """

    def __init__(self, wait_seconds: float):
        if wait_seconds < 0:
            raise ValueError(f"wait_seconds must be >= 0, got {wait_seconds}")
        self._wait = wait_seconds
        self._jobs: "queue.Queue[Optional[_Job]]" = queue.Queue()
        self._lock = threading.Lock()
        self._arriving = 0                       # queries being decoded right now
        self._stats = {"batches": 0, "queries": 0, "largest_batch": 0}
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
        """Embeds a batch, one ``transform`` call per model (several only across a swap)."""
        groups: Dict[int, List[_Job]] = {}
        for job in batch:
            if job.future.set_running_or_notify_cancel():    # skip requests given up
                groups.setdefault(id(job.vectorizer), []).append(job)
        for jobs in groups.values():
            images = np.stack([job.image for job in jobs])    # (B, S, S, 3)
            try:
                vectors = jobs[0].vectorizer.transform(images)  # (B, D)
            except Exception as err:  # pylint: disable=broad-exception-caught
                # Not swallowed: every waiting request receives the exception itself.
                for job in jobs:
                    job.future.set_exception(err)
                continue
            for job, vector in zip(jobs, vectors):
                job.future.set_result(vector.copy())         # (D,)
            with self._lock:
                self._stats["batches"] += 1
                self._stats["queries"] += len(jobs)
                self._stats["largest_batch"] = max(self._stats["largest_batch"], len(jobs))
            logger.debug("embedded a batch of %d", len(jobs))
