"""Serving latency and throughput: in-process SavedModel call vs `sicot serve` over gRPC and REST,
without and with dynamic batching, side by side in one run. Prints one JSON document.

    python bench/serving_latency.py --model-base-path runs/bench/model/export \
        --requests 200 --load-requests 400 --concurrency 8

What is measured (all loops are bounded; everything is on loopback):
  * single-request latency (p50/p99/mean, ms): one client, one image per request, sequential;
  * throughput (requests/s) and latency under load: `--concurrency` client threads sending
    `--load-requests` requests in total, one image each.
The in-process numbers call `.signatures[signature](image=...)` of the same SavedModel in this
process. The server runs in a separate process (`python -m sicot.cli serve`), started once
without and once with `--enable-batching`; the batching run reports the mean merged batch size
from the server's Prometheus metrics. Images are random JPEGs of `--image-size` pixels.
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import http.client
import io
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np


def make_images(count: int, size: int, seed: int) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        base = rng.integers(0, 256, size=3)
        pixels = np.clip(base[None, None, :] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def summarize(latencies_s: list[float], wall_s: float | None = None) -> dict:
    ms = np.array(latencies_s) * 1000.0
    out = {"n": int(ms.size), "p50_ms": round(float(np.percentile(ms, 50)), 3),
           "p99_ms": round(float(np.percentile(ms, 99)), 3), "mean_ms": round(float(ms.mean()), 3)}
    if wall_s is not None:
        out["throughput_rps"] = round(ms.size / wall_s, 1)
        out["wall_s"] = round(wall_s, 3)
    return out


def sequential(call, images, n: int) -> dict:
    latencies = []
    for i in range(n):
        started = time.perf_counter()
        call(images[i % len(images)])
        latencies.append(time.perf_counter() - started)
    return summarize(latencies)


def under_load(make_call, images, total: int, concurrency: int) -> dict:
    """`make_call()` gives each thread its own callable (own channel / connection)."""
    latencies, lock, counter = [], threading.Lock(), iter(range(total))

    def worker():
        call = make_call()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            started = time.perf_counter()
            call(images[i % len(images)])
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    return summarize(latencies, time.perf_counter() - started)


# -- clients ----------------------------------------------------------------------------------
def grpc_caller(port: int, model: str, signature: str):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

    def call(image):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        request.inputs["image"].CopyFrom(tf.make_tensor_proto([image]))
        response = stub.Predict(request, 60)
        assert response.outputs["scores"].tensor_shape.dim[0].size == 1
    return call


def rest_caller(port: int, model: str, signature: str):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # keep-alive

    def call(image):
        body = json.dumps({"signature_name": signature,
                           "instances": [{"image": {"b64": base64.b64encode(image).decode()}}]})
        connection.request("POST", f"/v1/models/{model}:predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST {response.status}: {data[:200]!r}")
        assert len(json.loads(data)["predictions"]) == 1
    return call


# -- server process ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, base_path: str, model: str, batching: dict | None):
        self.grpc_port, self.rest_port = _free_port(), _free_port()
        command = [sys.executable, "-m", "sicot.cli", "serve", "--model-base-path", base_path,
                   "--model-name", model, "--grpc-port", str(self.grpc_port),
                   "--rest-port", str(self.rest_port), "--poll-seconds", "0"]
        if batching:
            command += ["--enable-batching", "--max-batch-size", str(batching["max_batch_size"]),
                        "--batch-timeout-micros", str(batching["batch_timeout_micros"])]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        ready = threading.Event()

        def read():
            for line in self.process.stdout:
                self.lines.append(line)
                if line.startswith("sicot serve: model"):
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(300):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines[-20:]))

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.rest_port}/monitoring/prometheus/metrics"
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read().decode()

    def batch_stats(self, signature: str) -> tuple[float, float]:
        text = self.metrics()

        def value(name):
            m = re.search(name + r'\{model="[^"]+",signature="' + re.escape(signature) + r'"\} (\S+)', text)
            return float(m.group(1)) if m else 0.0
        return value("sicot_serving_batch_size_count"), value("sicot_serving_batch_size_sum")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def bench_server(args, images, batching: dict | None) -> dict:
    server = ServerProcess(args.model_base_path, args.model_name, batching)
    try:
        out = {}
        for api, factory in (("grpc", grpc_caller), ("rest", rest_caller)):
            def make(f=factory):
                return f(server.grpc_port if f is grpc_caller else server.rest_port,
                         args.model_name, args.signature)
            warm = make()
            for image in images[:args.warmup]:
                warm(image)
            count0, rows0 = server.batch_stats(args.signature)
            entry = {}
            if not batching:
                entry["single"] = sequential(make(), images, args.requests)
            count1, rows1 = server.batch_stats(args.signature)
            entry["load"] = under_load(make, images, args.load_requests, args.concurrency)
            count2, rows2 = server.batch_stats(args.signature)
            if count2 > count1:
                entry["load"]["mean_batch_rows"] = round((rows2 - rows1) / (count2 - count1), 2)
                entry["load"]["model_calls"] = int(count2 - count1)
            out[api] = entry
        return out
    finally:
        server.stop()


def bench_in_process(args, images) -> dict:
    import tensorflow as tf
    try:
        import tensorflow_text  # noqa: F401  (ops of the Transform graph)
    except ImportError:
        pass
    from sicot.serving.model_manager import discover_versions

    versions = discover_versions(args.model_base_path)
    if not versions:
        raise SystemExit(f"--model-base-path {args.model_base_path}: no <version>/saved_model.pb inside")
    fn = tf.saved_model.load(versions[max(versions)]).signatures[args.signature]

    def make():
        return lambda image: fn(image=tf.constant([image]))["scores"].numpy()

    call = make()
    for image in images[:args.warmup]:
        call(image)
    return {"single": sequential(call, images, args.requests),
            "load": under_load(make, images, args.load_requests, args.concurrency)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-base-path", required=True, help="TF Serving base path (DIR/<version>/saved_model.pb)")
    p.add_argument("--model-name", default="sicot")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--requests", type=int, default=200, help="sequential single-image requests")
    p.add_argument("--load-requests", type=int, default=400, help="requests in the throughput run")
    p.add_argument("--concurrency", type=int, default=8, help="client threads in the throughput run")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--batch-timeout-micros", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("requests", "load_requests", "concurrency", "max_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not os.path.isdir(args.model_base_path):
        p.error(f"--model-base-path {args.model_base_path}: no such directory")

    images = make_images(64, args.image_size, args.seed)
    batching = {"max_batch_size": args.max_batch_size, "batch_timeout_micros": args.batch_timeout_micros}
    started = time.time()
    results = {
        "in_process": bench_in_process(args, images),
        "server": bench_server(args, images, None),
        "server_batching": bench_server(args, images, batching),
    }
    print(json.dumps({
        "config": {k: v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "mean_image_bytes": int(np.mean([len(i) for i in images])),
        "results": results,
        "total_s": round(time.time() - started, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
