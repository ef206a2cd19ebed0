"""REST front end (aiohttp), with TF Serving's paths, bodies and status codes.

  POST /v1/models/NAME[/versions/N | /labels/L]:predict      (:classify, :regress -> 501)
  GET  /v1/models/NAME[/versions/N | /labels/L]              model status
  GET  /v1/models/NAME[/versions/N | /labels/L]/metadata     signature defs
  GET  /monitoring/prometheus/metrics                        Prometheus metrics

Paths are matched with the regular expressions of tensorflow_serving/model_servers/
http_rest_api_util.cc; any other /v1/ path is INVALID_ARGUMENT ("Malformed request"), as there.
Errors are {"error": "<message>"} with the HTTP status of the canonical code. Model calls run
off the event loop (serving/server.py), so the loop never blocks on TensorFlow.
"""
from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import unquote

import grpc
from aiohttp import web
from google.protobuf import json_format

from sicot.serving import tensor_json
from sicot.serving.errors import ServingError, invalid_argument
from sicot.serving.metrics import METRICS_PATH

_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)


def _json_response(doc, status: int = 200) -> web.Response:
    return web.Response(body=tensor_json.dumps(doc), status=status, content_type="application/json")


def _error_response(error: ServingError) -> web.Response:
    return _json_response({"error": error.message}, status=error.http_status)


def _predict_response(outputs, fmt) -> bytes:
    return tensor_json.dumps(tensor_json.make_predict_response(outputs, fmt))


def _parse_path(match) -> tuple[str, int | None]:
    name, version, label = match.group(1), match.group(2), match.group(3)
    name = unquote(name) if name else ""
    if label:
        raise invalid_argument(f"Unrecognized servable version label: {unquote(label)} "
                               "(this server has no version labels configured)")
    return name, (int(version) if version else None)


class RestApi:
    """The aiohttp application; `server` is the ModelServer holding model, metrics and pool."""

    def __init__(self, server, max_request_bytes: int):
        self.server = server
        self.max_request_bytes = max_request_bytes
        self.app = web.Application(client_max_size=max_request_bytes)
        self.app.router.add_get(METRICS_PATH, self.metrics)
        self.app.router.add_route("*", "/v1/{tail:.*}", self.v1)

    async def metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, self.server.metrics.exposition)
        return web.Response(body=body, headers={"Content-Type": self.server.metrics.content_type})

    async def v1(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        method, status = "unknown", "OK"
        try:
            path = request.path
            match = _PREDICTION_PATH.fullmatch(path) if request.method == "POST" else None
            if match:
                method = match.group(4).lower()
                response = await self._predict(request, match)
            else:
                match = _STATUS_PATH.fullmatch(path) if request.method == "GET" else None
                if not match:
                    raise invalid_argument(f"Malformed request: {request.method} {path}")
                method = "metadata" if match.group(4) else "status"
                response = await self._status_or_metadata(match)
            return response
        except ServingError as e:
            status = e.code.name
            return _error_response(e)
        except Exception as e:  # a bug still answers JSON
            status = "INTERNAL"
            return _error_response(ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"))
        finally:
            self.server.metrics.observe_request("rest", method, status, time.perf_counter() - started)

    async def _read_body(self, request: web.Request) -> bytes:
        too_large = ServingError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"Request body of {request.content_length} bytes exceeds the limit of "
            f"{self.max_request_bytes} bytes (--max-request-bytes)")
        if request.content_length is not None and request.content_length > self.max_request_bytes:
            raise too_large
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large

    async def _predict(self, request: web.Request, match) -> web.Response:
        with self.server.request() as tracked:  # from the headers on
            name, version = _parse_path(match)
            verb = match.group(4).lower()
            try:
                body = await self._read_body(request)
            except ServingError as e:
                # 413 is the HTTP answer to a body over the limit (gRPC says RESOURCE_EXHAUSTED).
                return _json_response({"error": e.message}, status=413)
            if verb != "predict":
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f":{verb} is not implemented by this server: TF2/Keras SavedModels "
                                   "have predict signatures only; use :predict")
            model = self.server.manager.get(name, version)  # one version for parsing and running

            def specs(signature_name):
                return model.input_specs[model.signature(signature_name)]

            signature_name, inputs, fmt = await self.server.off_loop(
                len(body), tensor_json.parse_predict_request, body, specs, model.max_input_rank)
            _, _, outputs = await self.server.predict_async(tracked, model, signature_name, inputs)
            doc = await self.server.off_loop(sum(a.size for a in outputs.values()),
                                             _predict_response, outputs, fmt)
            return web.Response(body=doc, content_type="application/json")

    async def _status_or_metadata(self, match) -> web.Response:
        name, version = _parse_path(match)
        if not name:
            raise invalid_argument("Missing model name in request.")
        if match.group(4):
            version, signature_defs = self.server.metadata(name, version)
            doc = {
                "model_spec": {"name": name, "signature_name": "", "version": str(version)},
                "metadata": {"signature_def": json_format.MessageToDict(
                    signature_defs, preserving_proto_field_name=True)},
            }
            return _json_response(doc)
        proto = self.server.status_proto(name, version)
        return _json_response(json_format.MessageToDict(
            proto, including_default_value_fields=True))
