"""Load generator for a TF Serving protocol server: mixed valid and malformed requests over gRPC
and REST from this (second) process, bounded in count and time. Prints one JSON document.

    python bench/serving_load.py --grpc 127.0.0.1:8500 --rest 127.0.0.1:8501 \
        --requests 2000 --duration 60 --concurrency 8 --malformed-every 4

Request i is malformed when i % malformed_every == malformed_every - 1, cycling through
MALFORMED (each with the status TF Serving answers for it); the rest are valid predictions,
alternating gRPC / REST and serving_default / serving_image_text. Every reply is checked:
  valid      -> OK (gRPC) or 200 (REST) with one row of `scores`;
  malformed  -> exactly the expected gRPC code / HTTP status.
The summary counts requests by kind, valid failures (must be 0), malformed requests answered
with another status (must be 0), the model versions seen in gRPC replies (a version swap shows
as two versions), latency percentiles and the wall time. Exit status 0 only when both counts
are 0 and every planned request was sent.
"""
from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import http.client
import io
import json
import struct
import sys
import threading
import time
import zlib

import numpy as np

from sicot import contract
from sicot.serving.client import predict_request

MODEL = "sicot"


def jpeg(seed: int, size=(32, 24)) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming width x height (a decompression bomb's header), a few rows of data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * (1 + 3 * min(width, 4096)) * 4)) + chunk(b"IEND", b""))


# kind -> (front end, expected gRPC code name or HTTP status)
MALFORMED = {
    "grpc_unknown_model": ("grpc", "NOT_FOUND"),
    "grpc_unknown_version": ("grpc", "NOT_FOUND"),
    "grpc_unknown_signature": ("grpc", "INVALID_ARGUMENT"),
    "grpc_wrong_input_name": ("grpc", "INVALID_ARGUMENT"),
    "grpc_float_image": ("grpc", "INVALID_ARGUMENT"),
    "grpc_not_an_image": ("grpc", "INVALID_ARGUMENT"),
    "grpc_truncated_jpeg": ("grpc", "INVALID_ARGUMENT"),
    "grpc_png_bomb_header": ("grpc", "INVALID_ARGUMENT"),
    "grpc_too_large": ("grpc", "RESOURCE_EXHAUSTED"),
    "rest_invalid_json": ("rest", 400),
    "rest_instances_and_inputs": ("rest", 400),
    "rest_bad_base64": ("rest", 400),
    "rest_unknown_model": ("rest", 404),
    "rest_not_an_image": ("rest", 400),
    "rest_wrong_path": ("rest", 400),
    "rest_too_large": ("rest", 413),
}


class Load:
    def __init__(self, args):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.args = args
        self.images = [jpeg(i) for i in range(16)]
        self.big = b"\xff\xd8\xff" + b"\x00" * (args.max_request_bytes + 1024)
        self._local = threading.local()
        self._grpc = grpc
        self._stub_cls = prediction_service_pb2_grpc.PredictionServiceStub
        self.host, port = args.rest.rsplit(":", 1)
        self.rest_port = int(port)

    # -- transports --------------------------------------------------------------------------
    def stub(self):
        if not hasattr(self._local, "stub"):
            channel = self._grpc.insecure_channel(self.args.grpc, options=[
                ("grpc.max_send_message_length", 2**31 - 1)])
            self._local.stub = self._stub_cls(channel)
        return self._local.stub

    def grpc_predict(self, inputs: dict, signature=contract.IMAGE_SIGNATURE, model=MODEL,
                     version=None):
        import tensorflow as tf

        request = predict_request(model, signature, inputs, version)
        try:
            response = self.stub().Predict(request, self.args.timeout)
        except self._grpc.RpcError as e:
            return e.code().name, None
        scores = tf.make_ndarray(response.outputs[contract.SCORES_OUTPUT])
        return "OK", (response.model_spec.version.value, scores.shape[0])

    def rest_post(self, path: str, body: bytes):
        conn = getattr(self._local, "http", None)
        if conn is None:
            conn = self._local.http = http.client.HTTPConnection(self.host, self.rest_port,
                                                                 timeout=self.args.timeout)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.http = None
            raise
        if response.getheader("Connection", "").lower() == "close":
            conn.close()
            self._local.http = None
        return response.status, data

    # -- one request -------------------------------------------------------------------------
    def valid(self, i: int):
        image = self.images[i % len(self.images)]
        with_text = (i // 2) % 2 == 1
        if i % 2 == 0:
            inputs = {contract.IMAGE_KEY: [image]}
            if with_text:
                inputs.update(title=["red mug gift"], tags=["kitchen|mug"])
            status, info = self.grpc_predict(
                inputs, contract.IMAGE_TEXT_SIGNATURE if with_text else contract.IMAGE_SIGNATURE)
            ok = status == "OK" and info[1] == 1
            return "valid_grpc", ok, status, (info[0] if info else None)
        instance = {contract.IMAGE_KEY: {"b64": base64.b64encode(image).decode()}}
        body = {"instances": [instance]}
        if with_text:
            instance.update(title="red mug gift", tags="kitchen|mug")
            body["signature_name"] = contract.IMAGE_TEXT_SIGNATURE
        status, data = self.rest_post(f"/v1/models/{MODEL}:predict", json.dumps(body).encode())
        ok = status == 200 and len(json.loads(data)["predictions"]) == 1
        return "valid_rest", ok, status, None

    def malformed(self, kind: str):
        image = self.images[0]
        predict = f"/v1/models/{MODEL}:predict"
        b64 = base64.b64encode(image).decode()
        if kind == "grpc_unknown_model":
            status, _ = self.grpc_predict({contract.IMAGE_KEY: [image]}, model="nope")
        elif kind == "grpc_unknown_version":
            status, _ = self.grpc_predict({contract.IMAGE_KEY: [image]}, version=987654)
        elif kind == "grpc_unknown_signature":
            status, _ = self.grpc_predict({contract.IMAGE_KEY: [image]}, signature="no_such_signature")
        elif kind == "grpc_wrong_input_name":
            status, _ = self.grpc_predict({"picture": [image]})
        elif kind == "grpc_float_image":
            status, _ = self.grpc_predict({contract.IMAGE_KEY: np.zeros([1], np.float32)})
        elif kind == "grpc_not_an_image":
            status, _ = self.grpc_predict({contract.IMAGE_KEY: [b"this is not an image"]})
        elif kind == "grpc_truncated_jpeg":
            status, _ = self.grpc_predict({contract.IMAGE_KEY: [image[:len(image) // 2]]})
        elif kind == "grpc_png_bomb_header":
            status, _ = self.grpc_predict({contract.IMAGE_KEY: [png_claiming(100_000, 100_000)]})
        elif kind == "grpc_too_large":
            status, _ = self.grpc_predict({contract.IMAGE_KEY: [self.big]})
        elif kind == "rest_invalid_json":
            status, _ = self.rest_post(predict, b'{"instances": [')
        elif kind == "rest_instances_and_inputs":
            status, _ = self.rest_post(predict, json.dumps(
                {"instances": [{contract.IMAGE_KEY: {"b64": b64}}], "inputs": {contract.IMAGE_KEY: [{"b64": b64}]}}).encode())
        elif kind == "rest_bad_base64":
            status, _ = self.rest_post(predict, b'{"instances": [{"image": {"b64": "***not base64***"}}]}')
        elif kind == "rest_unknown_model":
            status, _ = self.rest_post("/v1/models/nope:predict", json.dumps(
                {"instances": [{contract.IMAGE_KEY: {"b64": b64}}]}).encode())
        elif kind == "rest_not_an_image":
            status, _ = self.rest_post(predict, json.dumps(
                {"instances": [{contract.IMAGE_KEY: {"b64": base64.b64encode(b"plain text").decode()}}]}).encode())
        elif kind == "rest_wrong_path":
            status, _ = self.rest_post(f"/v1/models/{MODEL}/oops:predict", b"{}")
        elif kind == "rest_too_large":
            status, _ = self.rest_post(predict, b'{"instances": ["' + b"a" * len(self.big) + b'"]}')
        else:
            raise ValueError(kind)
        return kind, status == MALFORMED[kind][1], status, None

    def one(self, i: int):
        every = self.args.malformed_every
        started = time.perf_counter()
        try:
            if every and i % every == every - 1:
                kinds = list(MALFORMED)
                result = self.malformed(kinds[(i // every) % len(kinds)])
            else:
                result = self.valid(i)
        except Exception as e:  # noqa: BLE001 - a transport failure is a failed request
            result = ("transport_error", False, f"{type(e).__name__}: {e}", None)
        return result + (time.perf_counter() - started,)


def run(args) -> dict:
    load = Load(args)
    by_kind = collections.defaultdict(lambda: {"count": 0, "as_expected": 0, "unexpected": []})
    versions = collections.Counter()
    latencies = []
    started = time.monotonic()
    deadline = started + args.duration
    sent = 0
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        pending = set()
        i = 0
        while i < args.requests or pending:
            while i < args.requests and len(pending) < 2 * args.concurrency and time.monotonic() < deadline:
                pending.add(pool.submit(load.one, i))
                i += 1
            if time.monotonic() >= deadline and i < args.requests and not pending:
                break
            done, pending = concurrent.futures.wait(pending, timeout=1,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                kind, ok, status, version, seconds = future.result()
                sent += 1
                entry = by_kind[kind]
                entry["count"] += 1
                entry["as_expected"] += int(ok)
                if not ok and len(entry["unexpected"]) < 5:
                    entry["unexpected"].append(str(status))
                if version is not None:
                    versions[str(version)] += 1
                latencies.append(seconds)
            if time.monotonic() >= deadline and i < args.requests:
                args.requests = i  # out of time: stop planning more
    wall = time.monotonic() - started
    valid_failures = sum(v["count"] - v["as_expected"] for k, v in by_kind.items() if k.startswith("valid"))
    malformed_wrong = sum(v["count"] - v["as_expected"] for k, v in by_kind.items()
                          if not k.startswith("valid"))
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "requests_planned": args.planned, "requests_sent": sent,
        "valid": sum(v["count"] for k, v in by_kind.items() if k.startswith("valid")),
        "malformed": sum(v["count"] for k, v in by_kind.items() if k in MALFORMED),
        "valid_failures": valid_failures, "malformed_wrong_status": malformed_wrong,
        "transport_errors": by_kind["transport_error"]["count"] if "transport_error" in by_kind else 0,
        "by_kind": dict(by_kind), "grpc_versions_seen": dict(versions),
        "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 2),
                       "p99": round(float(np.percentile(ms, 99)), 2),
                       "max": round(float(ms.max()), 2)},
        "wall_s": round(wall, 2),
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grpc", required=True, help="HOST:PORT of the gRPC front end")
    p.add_argument("--rest", required=True, help="HOST:PORT of the REST front end")
    p.add_argument("--requests", type=int, default=2000, help="requests to send (default 2000)")
    p.add_argument("--duration", type=float, default=60.0, help="stop sending after this many seconds")
    p.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    p.add_argument("--malformed-every", type=int, default=4,
                   help="every Nth request is malformed (0: none; default 4)")
    p.add_argument("--max-request-bytes", type=int, default=64 * 1024,
                   help="the server's --max-request-bytes: the 'too large' requests exceed it")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.duration <= 0 or args.malformed_every < 0:
        p.error("--requests and --concurrency must be >= 1, --duration > 0, --malformed-every >= 0")
    args.planned = args.requests
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    summary = run(args)
    print(json.dumps(summary, indent=1), flush=True)
    complete = summary["requests_sent"] == summary["requests_planned"]
    return 0 if complete and summary["valid_failures"] == 0 and summary["malformed_wrong_status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
