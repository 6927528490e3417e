"""Several batches in flight on OpenVINO's throughput streams (the service under load).

One forward pass in latency mode spreads one batch over every core; when queries keep
coming, running a few batches at once, one per throughput stream, keeps the cores
busier than handing them one batch after another. :class:`StreamedForward` holds
OpenVINO's ``AsyncInferQueue`` of the model compiled with the ``THROUGHPUT`` hint:
:meth:`StreamedForward.start` returns at once (it waits only while every stream is
busy) and calls back with the vectors. The vectors are those of
:meth:`lib.embedding.vectorizer.Vectorizer.transform`: the same compiled IR, the same
precision.
"""
import logging
from typing import Any, Callable

import numpy as np

logger = logging.getLogger(__name__)

# Called with the (B, D) vectors of a batch, or with the exception that stopped it.
Done = Callable[[Any], None]


class StreamedForward:
    """Batches started asynchronously on a model compiled for throughput.

    Args:
        compiled: The OpenVINO model compiled with ``PERFORMANCE_HINT: THROUGHPUT``.
    """

    def __init__(self, compiled: Any):
        import openvino  # pylint: disable=import-outside-toplevel
        self.streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._queue = openvino.AsyncInferQueue(compiled, self.streams)
        self._queue.set_callback(self._finished)
        logger.info("query batches run on %d throughput streams when queries queue up",
                    self.streams)

    def start(self, images: np.ndarray, done: Done) -> None:
        """Starts embedding (B, S, S, 3) preprocessed ``images``; ``done`` gets (B, D).

        Blocks only while every stream is busy. ``done`` runs on an OpenVINO thread.
        """
        self._queue.start_async({0: np.ascontiguousarray(images, dtype=np.float32)}, done)

    @staticmethod
    def _finished(request: Any, done: Done) -> None:
        try:
            vectors = np.array(request.get_output_tensor(0).data, dtype=np.float32)  # (B, D)
        except RuntimeError as err:          # OpenVINO reports a failed inference so
            done(err)
            return
        done(vectors)

    def wait_all(self) -> None:
        """Returns when no batch is in flight."""
        self._queue.wait_all()
