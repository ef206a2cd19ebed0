"""One loaded version of a SavedModel: its signatures, their specs, and a checked call.

The server is generic over signatures: input and output names, dtypes and shapes come from the
loaded SavedModel (`.signatures[name].structured_input_signature` / `.structured_outputs`), and
the `SignatureDef` protos reported by GetModelMetadata are read from `saved_model.pb` itself, as
TF Serving reports them.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import threading
from typing import Callable, Mapping, Sequence

import grpc
import numpy as np

from sicot import contract
from sicot.serving.batching import BatchingOptions, SignatureBatcher
from sicot.serving.errors import ServingError, from_tensorflow_error, invalid_argument

log = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
MAX_RANK = 32  # numpy's limit on an array's dimensions


@dataclasses.dataclass(frozen=True)
class TensorSpecInfo:
    """Name, dtype (a tf.DType) and shape (a list with None for unknown) of one tensor."""

    name: str
    dtype: object
    shape: tuple

    @property
    def is_string(self) -> bool:
        return self.dtype.name == "string"


def _import_custom_ops() -> None:
    # SICoT's Transform graph uses tensorflow-text ops; they must be registered before loading
    # (the tensorflow/serving image links them in the same way).
    try:
        import tensorflow_text  # noqa: F401
    except ImportError:  # a model without text ops still loads
        pass


def read_signature_defs(export_dir: str):
    """The `SignatureDefMap` of the first (serving) MetaGraph in `export_dir/saved_model.pb`."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved_model = saved_model_pb2.SavedModel()
    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    if not saved_model.meta_graphs:
        raise ValueError(f"{export_dir}/saved_model.pb has no MetaGraph")
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in saved_model.meta_graphs[0].signature_def.items():
        signature_map.signature_def[key].CopyFrom(sig)
    return signature_map


def _check_batch(signature_name: str, specs: Mapping[str, TensorSpecInfo],
                 inputs: Mapping[str, np.ndarray]) -> None:
    """Inputs with a batch dimension (leading size None) must all have the same, non-zero, size."""
    rows = {k: v.shape[0] for k, v in inputs.items() if specs[k].shape and specs[k].shape[0] is None}
    empty = sorted(k for k, n in rows.items() if n == 0)
    if empty:
        raise invalid_argument(f"Input '{empty[0]}' of signature {signature_name} is an empty batch "
                               "(0 rows); send at least one row")
    if len(set(rows.values())) > 1:
        sizes = ", ".join(f"{k} {n}" for k, n in sorted(rows.items()))
        raise invalid_argument(f"Inputs of signature {signature_name} must have the same batch size "
                               f"(leading dimension); got {sizes}")


class LoadedModel:
    """A loaded model version, callable by signature name with numpy inputs.

    Args:
      name: model name.
      version: integer version (the directory name).
      export_dir: the version directory.
      batching: BatchingOptions to merge concurrent calls, or None to call directly.
      on_batch: `(signature_name, rows)` callback for every merged call.
      arriving: the server's count of requests received but not yet submitted (see
        SignatureBatcher), or None.
    """

    def __init__(self, name: str, version: int, export_dir: str,
                 batching: BatchingOptions | None = None,
                 on_batch: Callable[[str, int], None] | None = None,
                 arriving: Callable[[], int] | None = None):
        import tensorflow as tf

        _import_custom_ops()
        self.name = name
        self.version = version
        self.export_dir = export_dir
        self.batching = batching
        self.on_batch = on_batch
        self.arriving = arriving
        self.signature_defs = read_signature_defs(export_dir)
        self._saved_model = tf.saved_model.load(export_dir)
        self.signatures = dict(self._saved_model.signatures)
        if not self.signatures:
            raise ValueError(f"SavedModel {export_dir} has no serving signatures")
        self.input_specs: dict[str, dict[str, TensorSpecInfo]] = {}
        self.output_specs: dict[str, dict[str, TensorSpecInfo]] = {}
        self.max_input_rank = 0  # bounds the nesting of a REST body (unknown rank: numpy's limit)
        for sig_name, fn in self.signatures.items():
            _, kwargs = fn.structured_input_signature
            self.max_input_rank = max([self.max_input_rank] + [
                s.shape.rank if s.shape.rank is not None else MAX_RANK for s in kwargs.values()])
            self.input_specs[sig_name] = {
                k: TensorSpecInfo(k, s.dtype, tuple(s.shape.as_list() if s.shape.rank is not None else ()))
                for k, s in kwargs.items()}
            self.output_specs[sig_name] = {
                k: TensorSpecInfo(k, s.dtype, tuple(s.shape.as_list() if s.shape.rank is not None else ()))
                for k, s in fn.structured_outputs.items()}
        self._batchers: dict[str, SignatureBatcher] = {}
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.warmup_requests = self._warm_up()
        except Exception:
            self.close()
            raise

    def _warm_up(self) -> int:
        """Replays `assets.extra/tf_serving_warmup_requests` (TFRecord of PredictionLog) before the
        version is marked AVAILABLE, as TF Serving does; a failing record fails the load."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.export_dir, WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS + 1):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise ValueError(f"{path}: more than {MAX_WARMUP_RECORDS} warmup records")
            log_entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log_entry.WhichOneof("log_type") != "predict_log":
                raise ValueError(f"{path}: record {count} is a {log_entry.WhichOneof('log_type')}; "
                                 "only predict_log warmup records are supported")
            request = log_entry.predict_log.request
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            try:
                self.predict(request.model_spec.signature_name or None, inputs)
            except ServingError as e:
                raise ValueError(f"{path}: warmup record {count} failed: {e.message}") from None
        log.info("Warmed up %s version %d with %d requests", self.name, self.version, count)
        return count

    # -- signatures --------------------------------------------------------------------------
    def signature(self, signature_name: str | None) -> str:
        name = signature_name or contract.DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise invalid_argument(
                f'Serving signature name: "{name}" not found in signature def '
                f"(model {self.name} version {self.version} has: {', '.join(sorted(self.signatures))})")
        return name

    def check_inputs(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Checks names, dtypes and shapes against the signature; returns arrays of its dtypes."""
        specs = self.input_specs[signature_name]
        sent, wanted = set(inputs), set(specs)
        if sent != wanted:
            raise invalid_argument(
                f"input size does not match signature {signature_name}: "
                f"{len(sent)}!={len(wanted)} len({{{','.join(sorted(sent))}}}) != "
                f"len({{{','.join(sorted(wanted))}}}). Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
        checked = {}
        for key, spec in specs.items():
            value = np.asarray(inputs[key])
            if spec.is_string:
                if value.dtype.kind not in "OSU":
                    raise invalid_argument(
                        f"Input '{key}' of signature {signature_name} expects string (bytes) "
                        f"values, got {value.dtype.name}")
                if value.dtype.kind == "U":
                    value = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(value) \
                        if value.size else value.astype(object)
            else:
                want = np.dtype(spec.dtype.as_numpy_dtype)
                if value.dtype.kind in "OSU":
                    raise invalid_argument(
                        f"Input '{key}' of signature {signature_name} expects {spec.dtype.name} "
                        f"values, got strings")
                if value.dtype != want:
                    try:
                        with np.errstate(all="ignore"):  # NaN to int: refused just below
                            cast = value.astype(want)
                            lossless = np.array_equal(cast.astype(value.dtype), value)
                    except (TypeError, ValueError):  # no conversion between the two dtypes
                        lossless = False
                    if not lossless:
                        raise invalid_argument(
                            f"Input '{key}' of signature {signature_name} expects {spec.dtype.name}; "
                            f"the {value.dtype.name} values sent do not convert without loss")
                    value = cast
            if len(spec.shape) != value.ndim or any(
                    d is not None and d != v for d, v in zip(spec.shape, value.shape)):
                shape = [(-1 if d is None else d) for d in spec.shape]
                raise invalid_argument(
                    f"Input '{key}' of signature {signature_name} has shape {list(value.shape)}, "
                    f"expected {shape} (-1 = any size)")
            checked[key] = value
        _check_batch(signature_name, specs, checked)
        return checked

    # -- calls -------------------------------------------------------------------------------
    def _call(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        fn = self.signatures[signature_name]
        specs = self.input_specs[signature_name]
        try:
            outputs = fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
            return {k: v.numpy() for k, v in outputs.items()}
        except Exception as e:  # op errors keep their canonical code (bad image -> 400)
            raise from_tensorflow_error(e) from e

    def _batcher(self, signature_name: str) -> SignatureBatcher | None:
        if self.batching is None:
            return None
        with self._lock:
            if self._closed:
                return None
            batcher = self._batchers.get(signature_name)
            if batcher is None:
                on_batch = None
                if self.on_batch is not None:
                    on_batch = lambda rows, s=signature_name: self.on_batch(s, rows)  # noqa: E731
                batcher = SignatureBatcher(
                    lambda inputs, s=signature_name: self._call(s, inputs), self.batching,
                    on_batch=on_batch, name=f"{self.name}-v{self.version}-{signature_name}",
                    arriving=self.arriving)
                self._batchers[signature_name] = batcher
            return batcher

    def _prepare(self, signature_name: str | None, inputs: Mapping[str, np.ndarray],
                 output_filter: Sequence[str]) -> tuple[str, dict[str, np.ndarray]]:
        signature_name = self.signature(signature_name)
        unknown = [k for k in output_filter if k not in self.output_specs[signature_name]]
        if unknown:
            raise invalid_argument(
                f"output tensor alias not found in signature {signature_name}: {', '.join(unknown)} "
                f"(outputs: {', '.join(sorted(self.output_specs[signature_name]))})")
        return signature_name, self.check_inputs(signature_name, inputs)

    def _call_direct(self, signature_name: str, checked: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._call(signature_name, checked)
        if self.on_batch is not None:
            first = next(iter(checked.values()))
            self.on_batch(signature_name, first.shape[0] if first.ndim else 1)
        return outputs

    def _submit(self, batcher: SignatureBatcher, checked) -> concurrent.futures.Future | None:
        try:
            return batcher.submit(checked)
        except ServingError as e:
            # This version was unloaded between lookup and submit: it is still in memory,
            # so answer directly rather than fail the request during a version swap.
            if e.code != grpc.StatusCode.UNAVAILABLE or not self._closed:
                raise
            return None

    @staticmethod
    def _filter(outputs: dict[str, np.ndarray], output_filter: Sequence[str]) -> dict[str, np.ndarray]:
        return {k: outputs[k] for k in output_filter} if output_filter else outputs

    def predict(self, signature_name: str | None, inputs: Mapping[str, np.ndarray],
                output_filter: Sequence[str] = (),
                submitted: Callable[[], None] | None = None) -> tuple[str, dict[str, np.ndarray]]:
        """Runs a signature on this thread, or through the batcher when batching is on; returns
        (name, outputs). `submitted()` is called once the request is queued (or about to run)."""
        signature_name, checked = self._prepare(signature_name, inputs, output_filter)
        batcher = self._batcher(signature_name)
        future = None if batcher is None else self._submit(batcher, checked)
        if submitted is not None:
            submitted()
        outputs = self._call_direct(signature_name, checked) if future is None else future.result()
        return signature_name, self._filter(outputs, output_filter)

    async def predict_async(self, signature_name: str | None, inputs: Mapping[str, np.ndarray],
                            output_filter: Sequence[str] = (),
                            executor: concurrent.futures.Executor | None = None,
                            submitted: Callable[[], None] | None = None,
                            ) -> tuple[str, dict[str, np.ndarray]]:
        """`predict` for a request handled on an asyncio loop: the signature runs on a batch
        thread with batching, else on `executor` (None: asyncio's default pool), one thread
        hand-off each way; the loop only waits for the result. `submitted()` is called once the
        request is queued (or about to run unbatched)."""
        signature_name, checked = self._prepare(signature_name, inputs, output_filter)
        batcher = self._batcher(signature_name)
        future = None if batcher is None else self._submit(batcher, checked)
        if submitted is not None:
            submitted()
        if future is None:
            outputs = await asyncio.get_running_loop().run_in_executor(
                executor, self._call_direct, signature_name, checked)
        else:
            outputs = await asyncio.wrap_future(future)
        return signature_name, self._filter(outputs, output_filter)

    def close(self) -> None:
        """Drains and stops the batch queues; in-flight direct calls finish on their own."""
        with self._lock:
            self._closed = True
            batchers, self._batchers = list(self._batchers.values()), {}
        for b in batchers:
            b.close()
