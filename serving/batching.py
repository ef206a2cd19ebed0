"""Dynamic batching: concurrent requests for one signature are merged into one call.

Like TF Serving's batching session (tensorflow_serving/batching/README.md): a batch is closed when
it holds `max_batch_size` rows or `batch_timeout_micros` after its first request arrived,
whichever comes first; the inputs are concatenated along the batch dimension, the signature runs
once, and every caller gets back its own rows. Requests are merged only when their inputs have
the same names and per-row shapes (strings and images of any size are scalar rows, so requests
to the SICoT signatures always merge). A request with more rows than `max_batch_size` runs on
its own as one batch (TF Serving would reject it unless large-batch splitting is on).

`num_batch_threads` batches of one signature run at the same time (TF Serving: the threads of
its batch scheduler; with one thread, a slow batch holds every request behind it). With
`allowed_batch_sizes`, a merged batch is padded up to the next allowed size by repeating its
first row and the padding rows are dropped from the outputs, so the model only ever sees those
batch sizes (TF Serving's rule: increasing, the last one equal to `max_batch_size`).

One difference from TF Serving: inside the server (`arriving` given), a batch does not wait for
company that cannot come. When its queue is empty, no other request is being received and no
other batch is running, it closes at once, so a lone request does not pay
`batch_timeout_micros` for nothing. Under load (batches running) it still waits, so merging is
kept.
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
      num_batch_threads: batches of one signature processed at the same time.
      allowed_batch_sizes: batch sizes the model is called with (merged batches are padded up);
        empty = any size.
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        if self.max_enqueued_batches < 1:
            raise ValueError(f"max_enqueued_batches must be >= 1, got {self.max_enqueued_batches}")
        if self.num_batch_threads < 1:
            raise ValueError(f"num_batch_threads must be >= 1, got {self.num_batch_threads}")
        sizes = tuple(int(s) for s in self.allowed_batch_sizes)
        object.__setattr__(self, "allowed_batch_sizes", sizes)
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
                raise ValueError(f"allowed_batch_sizes must be positive and increasing, got {list(sizes)}")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(f"the last of allowed_batch_sizes ({sizes[-1]}) must equal "
                                 f"max_batch_size ({self.max_batch_size})")

    def padded_size(self, rows: int) -> int:
        """The batch size the model is called with for `rows` merged rows."""
        return next((s for s in self.allowed_batch_sizes if s >= rows), rows)


@dataclasses.dataclass
class _Task:
    inputs: Inputs
    rows: int
    merge_key: tuple
    future: concurrent.futures.Future
    enqueued: float = dataclasses.field(default_factory=time.monotonic)


def _rows(inputs: Inputs) -> int:
    sizes = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "Batching needs every input to have the same leading (batch) "
                           f"dimension; got shapes { {k: list(v.shape) for k, v in inputs.items()} }")
    return sizes.pop()


def _concat_padded(arrays: list[np.ndarray], pad_rows: int) -> np.ndarray:
    if pad_rows:
        arrays = arrays + [np.repeat(arrays[0][:1], pad_rows, axis=0)]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)


class SignatureBatcher:
    """Merges concurrent calls of one signature function; `num_batch_threads` worker threads.

    Args:
      run: the signature call, `inputs -> outputs`, every output batched along axis 0.
      options: BatchingOptions.
      on_batch: called with the row count of every merged call (for metrics and tests).
      name: for the worker thread and log lines.
      arriving: how many requests the server has received and not yet submitted (being parsed
        and checked). When given, a batch whose queue is empty closes at once when no request is
        arriving and no other batch is running (whose callers may send again soon), instead of
        waiting out `batch_timeout_micros`: nobody could join it. None (no way to know) keeps
        TF Serving's rule: wait for the timeout.
    """

    def __init__(self, run: Callable[[Inputs], Outputs], options: BatchingOptions,
                 on_batch: Callable[[int], None] | None = None, name: str = "batcher",
                 arriving: Callable[[], int] | None = None):
        self.run = run
        self.options = options
        self.on_batch = on_batch
        self.name = name
        self.arriving = arriving
        self._queue: collections.deque[_Task] = collections.deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._forming = False
        self._running = 0  # batches formed and not finished
        self._threads = [threading.Thread(target=self._loop, name=f"batch-{name}-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

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
            self._cond.notify_all()
        return task.future

    def close(self, timeout: float = 30.0) -> None:
        """Stops taking requests; queued requests still run before the worker exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _next_batch(self) -> list[_Task] | None:
        """Forms the next batch. One thread forms a batch at a time (TF Serving has one open
        batch per queue); the others wait for it to close, then form the next while it runs.
        The timeout counts from the arrival of the batch's first request."""
        max_rows = self.options.max_batch_size
        with self._cond:
            while self._forming or not self._queue:
                if self._closed and not self._queue:
                    return None
                self._cond.wait()
            self._forming = True
            try:
                first = self._queue.popleft()
                batch, rows = [first], first.rows
                deadline = first.enqueued + self.options.batch_timeout_micros / 1e6
                while rows < max_rows:
                    fitting = next((t for t in self._queue
                                    if t.merge_key == first.merge_key and rows + t.rows <= max_rows),
                                   None)
                    if fitting is not None:
                        self._queue.remove(fitting)
                        batch.append(fitting)
                        rows += fitting.rows
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed:
                        break
                    if self.arriving is not None and self.arriving() == 0 and not self._running:
                        break  # nobody on the way, and no batch whose callers come back soon
                    self._cond.wait(remaining)
                self._queued_rows -= rows
                self._running += 1
                return batch
            finally:
                self._forming = False
                self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            finally:
                with self._cond:
                    self._running -= 1

    def _run_batch(self, batch: list[_Task]) -> None:
        total = sum(t.rows for t in batch)
        try:
            padded = self.options.padded_size(total)
            if len(batch) == 1 and padded == total:
                merged = batch[0].inputs
            else:
                merged = {k: _concat_padded([t.inputs[k] for t in batch], padded - total)
                          for k in batch[0].inputs}
            outputs = self.run(merged)
            if padded != total:
                outputs = {k: v[:total] if v.ndim and v.shape[0] == padded else v
                           for k, v in outputs.items()}
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
