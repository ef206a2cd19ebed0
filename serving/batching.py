"""Dynamic batching: concurrent requests for one signature are merged into one call.

Like TF Serving's batching session (tensorflow_serving/batching/README.md): a batch is closed when
it holds `max_batch_size` rows or `batch_timeout_micros` after its first request arrived,
whichever comes first; the inputs are concatenated along the batch dimension, the signature runs
once, and every caller gets back its own rows. Requests are merged only when their inputs have
the same names and per-row shapes (strings and images of any size are scalar rows, so requests
to the SICoT signatures always merge). A request with more rows than `max_batch_size` runs on
its own as one batch (TF Serving would reject it unless large-batch splitting is on).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from typing import Callable, Mapping

import numpy as np

from sicot.serving.errors import ServingError

import grpc

log = logging.getLogger(__name__)

Inputs = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """The subset of TF Serving's BatchingParameters that applies to one process.

    Attributes:
      max_batch_size: most rows in one merged call.
      batch_timeout_micros: how long the first request of a batch waits for company.
      max_enqueued_batches: queue bound, in batches; beyond it requests get RESOURCE_EXHAUSTED.
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 100

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        if self.max_enqueued_batches < 1:
            raise ValueError(f"max_enqueued_batches must be >= 1, got {self.max_enqueued_batches}")


@dataclasses.dataclass
class _Task:
    inputs: Inputs
    rows: int
    merge_key: tuple
    future: concurrent.futures.Future


def _rows(inputs: Inputs) -> int:
    sizes = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "Batching needs every input to have the same leading (batch) "
                           f"dimension; got shapes { {k: list(v.shape) for k, v in inputs.items()} }")
    return sizes.pop()


class SignatureBatcher:
    """Merges concurrent calls of one signature function; one worker thread per batcher.

    Args:
      run: the signature call, `inputs -> outputs`, every output batched along axis 0.
      options: BatchingOptions.
      on_batch: called with the row count of every merged call (for metrics and tests).
      name: for the worker thread and log lines.
    """

    def __init__(self, run: Callable[[Inputs], Outputs], options: BatchingOptions,
                 on_batch: Callable[[int], None] | None = None, name: str = "batcher"):
        self.run = run
        self.options = options
        self.on_batch = on_batch
        self.name = name
        self._queue: collections.deque[_Task] = collections.deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"batch-{name}", daemon=True)
        self._thread.start()

    def submit(self, inputs: Inputs) -> concurrent.futures.Future:
        rows = _rows(inputs)
        key = tuple(sorted((k, v.shape[1:], v.dtype.kind) for k, v in inputs.items()))
        task = _Task(inputs, rows, key, concurrent.futures.Future())
        limit = self.options.max_enqueued_batches * self.options.max_batch_size
        with self._cond:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   f"Batch queue {self.name} is shut down (model version unloading)")
            if self._queued_rows + rows > limit:
                raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"The batch scheduling queue {self.name} is full "
                                   f"({self._queued_rows} rows queued, limit {limit})")
            self._queue.append(task)
            self._queued_rows += rows
            self._cond.notify()
        return task.future

    def close(self, timeout: float = 30.0) -> None:
        """Stops taking requests; queued requests still run before the worker exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _next_batch(self) -> list[_Task] | None:
        max_rows = self.options.max_batch_size
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            deadline = time.monotonic() + self.options.batch_timeout_micros / 1e6
            while rows < max_rows:
                fitting = next((t for t in self._queue
                                if t.merge_key == first.merge_key and rows + t.rows <= max_rows), None)
                if fitting is not None:
                    self._queue.remove(fitting)
                    batch.append(fitting)
                    rows += fitting.rows
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            self._queued_rows -= rows
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Task]) -> None:
        total = sum(t.rows for t in batch)
        try:
            if len(batch) == 1:
                merged = batch[0].inputs
            else:
                merged = {k: np.concatenate([t.inputs[k] for t in batch], axis=0)
                          for k in batch[0].inputs}
            outputs = self.run(merged)
        except BaseException as e:  # every caller of the batch gets the error
            for t in batch:
                t.future.set_exception(e)
            return
        if self.on_batch is not None:
            self.on_batch(total)
        unbatched = [k for k, v in outputs.items() if v.ndim == 0 or v.shape[0] != total]
        if unbatched and len(batch) > 1:
            # An output without a batch dimension cannot be split: run each request alone.
            log.warning("%s: outputs %s are not batched; running %d requests one by one",
                        self.name, unbatched, len(batch))
            for t in batch:
                self._run_batch([t])
            return
        start = 0
        for t in batch:
            t.future.set_result({k: v[start:start + t.rows] if len(batch) > 1 else v
                                 for k, v in outputs.items()})
            start += t.rows
