"""A local model server that speaks the TensorFlow Serving protocol (gRPC + REST).

Real deployments run `tensorflow_model_server` (serving/deploy/); this server exists so that the
same clients, requests and version layout work on a laptop and in tests, where the TF Serving
binary is not available. One process serves one model (`--model_name` / `--model_base_path` of
TF Serving):

    server = ModelServer("sicot", "/models/sicot", grpc_port=8500, rest_port=8501)
    server.start()          # loads the latest version, binds both ports
    ...
    server.stop()

Ports may be 0 (pick a free one); `server.grpc_port` / `server.rest_port` hold the bound ports.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from typing import Mapping, Sequence

import grpc
import numpy as np

from sicot.serving.batching import BatchingOptions
from sicot.serving.errors import ServingError
from sicot.serving.metrics import ServingMetrics
from sicot.serving.model_manager import ModelManager
from sicot.serving.servable import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
# Same rule and default as `sicot import` (ImportConfig.max_pixels): what could be trained on
# can be served; larger images (decompression bombs) are refused from their header.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# REST bodies and outputs up to this size (bytes or values) are parsed and formatted on the
# event loop itself, larger ones on the request pool.
INLINE_WORK_LIMIT = 256 * 1024


@dataclasses.dataclass
class ServerOptions:
    """Settings of `sicot serve` (TF Serving flag names in comments)."""

    model_name: str                      # --model_name
    model_base_path: str                 # --model_base_path
    host: str = "127.0.0.1"              # TF Serving binds 0.0.0.0; we default to loopback
    grpc_port: int = 8500                # --port
    rest_port: int = 8501                # --rest_api_port (0 = pick a free port; None = no REST)
    poll_seconds: float = 2.0            # --file_system_poll_wait_seconds
    batching: BatchingOptions | None = None  # --enable_batching + --batching_parameters_file
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    num_threads: int = 32                # request threads (gRPC pool, REST model pool)
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS  # None: no limit (serving/image_limits.py)
    intra_op_parallelism: int = 0        # --tensorflow_intra_op_parallelism (0: TF's default)
    inter_op_parallelism: int = 0        # --tensorflow_inter_op_parallelism (0: TF's default)


class ModelServer:
    def __init__(self, options: ServerOptions):
        self.options = options
        self.metrics = ServingMetrics(options.model_name)
        self._seen_versions: set[int] = set()
        # Predict requests received and not yet handed to a model (PredictRequest); the batch
        # threads read it: a forming batch stops waiting at 0.
        self._requests_lock = threading.Lock()
        self._arriving = 0
        self.manager = ModelManager(
            options.model_name, options.model_base_path, poll_seconds=options.poll_seconds,
            batching=options.batching, on_batch=self.metrics.observe_batch,
            on_change=self._on_versions_changed, arriving=lambda: self._arriving)
        self.executor = concurrent.futures.ThreadPoolExecutor(options.num_threads, thread_name_prefix="rest")
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc_server: grpc.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._runner = None

    # -- operations shared by both front ends ---------------------------------------------------
    def request(self) -> "PredictRequest":
        """Tracks one Predict request (with-block), see PredictRequest."""
        return PredictRequest(self)

    def predict(self, model_name: str, version: int | None, signature_name: str,
                inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = (),
                request: "PredictRequest | None" = None):
        """Runs the signature on this thread (gRPC's handler thread); returns (version,
        signature_name, outputs); raises ServingError. `request`: the front end's PredictRequest."""
        model = self.manager.get(model_name, version)
        self._check_images(model, signature_name, inputs)
        signature, outputs = model.predict(signature_name, inputs, output_filter,
                                           submitted=None if request is None else request.handed_over)
        return model.version, signature, outputs

    async def predict_async(self, request: "PredictRequest", model: LoadedModel,
                            signature_name: str | None, inputs: Mapping[str, np.ndarray],
                            output_filter: Sequence[str] = ()):
        """`predict` for the REST event loop: the signature runs on the request pool (or a batch
        thread) while the loop serves other requests."""
        self._check_images(model, signature_name, inputs)
        signature, outputs = await model.predict_async(
            signature_name, inputs, output_filter, self.executor, submitted=request.handed_over)
        return model.version, signature, outputs

    def _check_images(self, model: LoadedModel, signature_name: str | None, inputs) -> None:
        from sicot.serving.image_limits import check_image_inputs

        check_image_inputs(model.signature(signature_name), inputs, self.options.max_image_pixels)

    async def off_loop(self, work: int, fn, *args):
        """`fn(*args)` on the loop when `work` (bytes or values it handles) is small, else on the
        request pool: small parsing and formatting is cheaper than a thread hand-off, a large
        body must not stall every other request on the loop."""
        if work <= INLINE_WORK_LIMIT:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def metadata(self, model_name: str, version: int | None):
        """(version, SignatureDefMap) of the requested (or latest) loaded version."""
        model = self.manager.get(model_name, version)
        return model.version, model.signature_defs

    def status_proto(self, model_name: str, version: int | None):
        from tensorflow_serving.apis import get_model_status_pb2

        response = get_model_status_pb2.GetModelStatusResponse()
        for state in self.manager.states(model_name, version):
            entry = response.model_version_status.add()
            entry.version = state.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
            entry.status.error_code = state.error_code.value[0]
            entry.status.error_message = state.error_message
        return response

    def _on_versions_changed(self) -> None:
        loaded = set(self.manager.loaded_versions())
        self._seen_versions |= loaded
        self.metrics.set_loaded_versions(loaded, self._seen_versions)
        failed = [s for s in self.manager.states(self.options.model_name) if s.error_code != grpc.StatusCode.OK]
        self.metrics.failed_versions.labels(self.options.model_name).set(len(failed))

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "ModelServer":
        from sicot.serving.grpc_api import add_services
        from sicot.serving.rest_api import RestApi

        started = time.monotonic()
        configure_tensorflow_threads(self.options.intra_op_parallelism,
                                     self.options.inter_op_parallelism)
        self.manager.start()
        o = self.options
        grpc_options = [("grpc.max_receive_message_length", o.max_request_bytes),
                        ("grpc.max_send_message_length", 2**31 - 1),
                        ("grpc.so_reuseport", 0)]
        self._grpc_server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(o.num_threads, thread_name_prefix="grpc"),
            options=grpc_options)
        add_services(self._grpc_server, self)
        self.grpc_port = self._grpc_server.add_insecure_port(f"{_bracket(o.host)}:{o.grpc_port}")
        if self.grpc_port == 0:
            raise OSError(f"could not bind gRPC to {o.host}:{o.grpc_port}")
        self._grpc_server.start()
        if o.rest_port is not None:
            self._start_rest(RestApi(self, o.max_request_bytes))
        log.info("Serving model %s (versions %s) on gRPC %s:%s, REST %s:%s, started in %.1fs",
                 o.model_name, self.manager.loaded_versions(), o.host, self.grpc_port, o.host,
                 self.rest_port, time.monotonic() - started)
        return self

    def _start_rest(self, api) -> None:
        from aiohttp import web

        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="rest-loop", daemon=True)
        self._loop_thread.start()

        async def start():
            runner = web.AppRunner(api.app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.options.host, self.options.rest_port, reuse_port=False)
            await site.start()
            return runner, site._server.sockets[0].getsockname()[1]

        self._runner, self.rest_port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(60)

    def stop(self, grace: float = 5.0) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait()
            self._grpc_server = None
        if self._loop is not None:
            if self._runner is not None:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(grace + 5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join()
            self._loop.close()
            self._loop = None
        self.manager.stop()
        self.executor.shutdown(wait=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class PredictRequest:
    """One Predict request inside the server (a with-block around its handling): while it is
    still arriving (received, not yet handed to a model, `handed_over()`), a forming batch waits
    for it, up to the batch timeout; when none is arriving, nobody else can join the batch."""

    __slots__ = ("_server", "_arriving")

    def __init__(self, server: ModelServer):
        self._server = server
        self._arriving = True
        with server._requests_lock:
            server._arriving += 1

    def handed_over(self) -> None:
        if self._arriving:
            self._arriving = False
            with self._server._requests_lock:
                self._server._arriving -= 1

    def __enter__(self) -> "PredictRequest":
        return self

    def __exit__(self, *exc) -> None:
        self.handed_over()


def configure_tensorflow_threads(intra_op: int, inter_op: int) -> None:
    """Sets TensorFlow's op thread pools (process-wide, before the first op runs); 0 keeps the
    default. Raises ValueError when TensorFlow already runs with other values."""
    if not intra_op and not inter_op:
        return
    import tensorflow as tf

    threading_config = tf.config.threading
    for value, getter, setter in (
            (intra_op, threading_config.get_intra_op_parallelism_threads,
             threading_config.set_intra_op_parallelism_threads),
            (inter_op, threading_config.get_inter_op_parallelism_threads,
             threading_config.set_inter_op_parallelism_threads)):
        if not value or getter() == value:
            continue
        try:
            setter(value)
        except RuntimeError as e:
            raise ValueError(f"cannot set TensorFlow op parallelism to {value} in this process: "
                             f"TensorFlow is already initialised ({e})") from None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


__all__ = ["ModelServer", "ServerOptions", "ServingError", "BatchingOptions"]
