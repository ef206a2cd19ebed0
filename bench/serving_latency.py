"""Serving latency and throughput: in-process SavedModel call vs `sicot serve` over gRPC and REST,
without and with dynamic batching, side by side in one run. Prints one JSON document.

    python bench/serving_latency.py --model-base-path runs/bench/model/export \
        --requests 200 --load-requests 400 --concurrency 8

What is measured (all loops are bounded; everything is on loopback):
  * single-request latency (p50/p99/mean, ms): one client, one image per request, sequential;
  * throughput (requests/s) and latency under load: `--concurrency` client threads sending
    `--load-requests` requests in total, one image each.
Configurations: `in_process` calls `.signatures[signature](image=...)` of the same SavedModel in
this process; `server.*` and `server_batching.*` are two `python -m sicot.cli serve` processes,
without and with `--enable-batching`, over gRPC and REST. They are measured interleaved in
`--rounds` rounds (so background load hits all alike). `*.model_calls_under_load` counts the
signature calls the servers made in the throughput runs (from their Prometheus metrics): with
batching, fewer calls with more rows each; `load.server_cpu_ms_per_request` is the server
process's CPU time per request in those runs (less sensitive to other jobs than requests/s).
Images are random JPEGs of `--image-size` pixels.
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

from sicot import contract


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
    return out


def sequential(call, images, n: int, offset: int = 0) -> tuple[list[float], float]:
    latencies = []
    started = time.perf_counter()
    for i in range(offset, offset + n):
        t0 = time.perf_counter()
        call(images[i % len(images)])
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - started


def under_load(make_call, images, total: int, concurrency: int) -> tuple[list[float], float]:
    """`concurrency` threads, each with its own `make_call()` client, send `total` requests."""
    latencies, lock, counter = [], threading.Lock(), iter(range(total))
    calls = [make_call() for _ in range(concurrency)]  # connect before the clock starts

    def worker(call):
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            call(images[i % len(images)])
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker, call) for call in calls]:
            f.result()
    return latencies, time.perf_counter() - started


# -- clients ----------------------------------------------------------------------------------
def grpc_caller(port: int, model: str, signature: str):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from sicot.serving.client import predict_request

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

    def call(image):
        request = predict_request(model, signature, {contract.IMAGE_KEY: [image]})
        response = stub.Predict(request, 60)
        assert response.outputs[contract.SCORES_OUTPUT].tensor_shape.dim[0].size == 1
    return call


def rest_caller(port: int, model: str, signature: str):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # keep-alive

    def call(image):
        body = json.dumps({"signature_name": signature,
                           "instances": [{contract.IMAGE_KEY: {"b64": base64.b64encode(image).decode()}}]})
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
    def __init__(self, base_path: str, model: str, batching: dict | None, extra_args=()):
        self.grpc_port, self.rest_port = _free_port(), _free_port()
        command = [sys.executable, "-m", "sicot.cli", "serve", "--model-base-path", base_path,
                   "--model-name", model, "--grpc-port", str(self.grpc_port),
                   "--rest-port", str(self.rest_port), "--poll-seconds", "0"]
        command += list(extra_args)
        if batching:
            command += ["--enable-batching", "--max-batch-size", str(batching["max_batch_size"]),
                        "--batch-timeout-micros", str(batching["batch_timeout_micros"]),
                        "--num-batch-threads", str(batching["num_batch_threads"])]
            if batching["allowed_batch_sizes"]:
                command += ["--allowed-batch-sizes", batching["allowed_batch_sizes"]]
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

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (/proc/PID/stat)."""
        return _process_cpu_seconds(self.process.pid)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def grpc_status_caller(port: int, model: str):
    """GetModelStatus: the gRPC path (transport, threads, handler) without a model call."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    return lambda image: stub.GetModelStatus(request, 60)


def rest_status_caller(port: int, model: str):
    """GET /v1/models/NAME: the REST path without a model call."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(image):
        connection.request("GET", f"/v1/models/{model}")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"REST status {response.status}")
    return call


def in_process_caller(args):
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
    return lambda image: fn(**{contract.IMAGE_KEY: tf.constant([image])})[
        contract.SCORES_OUTPUT].numpy()


def run(args, images) -> dict:
    """All measurements, interleaved in `--rounds` rounds so that load from other processes on
    the machine hits every configuration alike; latencies are pooled over the rounds."""
    from sicot.serving.server import configure_tensorflow_threads

    batching = {"max_batch_size": args.max_batch_size, "batch_timeout_micros": args.batch_timeout_micros,
                "num_batch_threads": args.num_batch_threads, "allowed_batch_sizes": args.allowed_batch_sizes}
    threads = ["--tensorflow-intra-op-parallelism", str(args.intra_op),
               "--tensorflow-inter-op-parallelism", str(args.inter_op)]
    # The in-process baseline runs with the servers' TensorFlow thread settings.
    configure_tensorflow_threads(args.intra_op, args.inter_op)
    servers = {}
    try:
        servers["server"] = ServerProcess(args.model_base_path, args.model_name, None, threads)
        servers["server_batching"] = ServerProcess(args.model_base_path, args.model_name, batching, threads)
        local = in_process_caller(args)
        makers = {"in_process": lambda: local}
        for name, server in servers.items():
            makers[f"{name}.grpc"] = lambda s=server: grpc_caller(s.grpc_port, args.model_name, args.signature)
            makers[f"{name}.rest"] = lambda s=server: rest_caller(s.rest_port, args.model_name, args.signature)
        makers["server.grpc_status_only"] = lambda s=servers["server"]: grpc_status_caller(
            s.grpc_port, args.model_name)
        makers["server.rest_status_only"] = lambda s=servers["server"]: rest_status_caller(
            s.rest_port, args.model_name)
        for make in makers.values():  # warm-up, sequential and concurrent: first calls allocate
            call = make()
            for image in images[:args.warmup]:
                call(image)
            under_load(make, images, args.warmup * args.concurrency, args.concurrency)
        pooled = {(k, kind): ([], 0.0) for k in makers for kind in ("single", "load")}
        batches = {name: [0.0, 0.0] for name in servers}
        cpu = {k: [0.0, 0.0, 0] for k in makers}  # server CPU s, benchmark-process CPU s, requests
        load_cpu = {k: [0.0, 0] for k in makers}  # server CPU s, requests (throughput runs)
        for r in range(args.rounds):
            for key, make in makers.items():
                single = make()
                name = key.split(".")[0]
                server_cpu = servers[name].cpu_seconds() if name in servers else 0.0
                own_cpu = time.process_time()
                n = args.requests // args.rounds
                lat, wall = sequential(single, images, n, offset=r)
                cpu[key][0] += (servers[name].cpu_seconds() if name in servers else 0.0) - server_cpu
                cpu[key][1] += time.process_time() - own_cpu
                cpu[key][2] += n
                pooled[(key, "single")] = (pooled[(key, "single")][0] + lat, pooled[(key, "single")][1] + wall)
                if key.endswith("_status_only"):
                    continue
                before = servers[name].batch_stats(args.signature) if name in servers else None
                server_cpu = servers[name].cpu_seconds() if name in servers else 0.0
                lat, wall = under_load(make, images, args.load_requests // args.rounds, args.concurrency)
                if name in servers:
                    load_cpu[key][0] += servers[name].cpu_seconds() - server_cpu
                    load_cpu[key][1] += len(lat)
                pooled[(key, "load")] = (pooled[(key, "load")][0] + lat, pooled[(key, "load")][1] + wall)
                if before is not None:
                    after = servers[name].batch_stats(args.signature)
                    batches[name][0] += after[0] - before[0]
                    batches[name][1] += after[1] - before[1]
        results = {}
        for (key, kind), (lat, wall) in pooled.items():
            if lat:
                results.setdefault(key, {})[kind] = summarize(lat, wall if kind == "load" else None)
        for key, (server_s, own_s, n) in cpu.items():
            # CPU time is less sensitive to other jobs than wall time: where the time goes.
            results[key]["single"]["server_cpu_ms_per_request"] = round(1000 * server_s / n, 3)
            results[key]["single"]["client_cpu_ms_per_request"] = round(1000 * own_s / n, 3)
        for key, (server_s, n) in load_cpu.items():
            # Under load: what merging saves shows here even when wall-time throughput is noisy.
            if n:
                results[key]["load"]["server_cpu_ms_per_request"] = round(1000 * server_s / n, 3)
        base = results["in_process"]["single"]["p50_ms"]
        results["p50_overhead_over_in_process_ms"] = {
            key: round(results[key]["single"]["p50_ms"] - base, 3)
            for key in makers if key != "in_process" and not key.endswith("_status_only")}
        unbatched = {api: results[f"server.{api}"]["load"]["throughput_rps"] for api in ("grpc", "rest")}
        results["batching_throughput_ratio"] = {
            api: round(results[f"server_batching.{api}"]["load"]["throughput_rps"] / unbatched[api], 3)
            for api in ("grpc", "rest")}
        for name, (calls, rows) in batches.items():
            results[f"{name}.model_calls_under_load"] = {
                "calls": int(calls), "mean_rows_per_call": round(rows / calls, 2) if calls else None}
        return results
    finally:
        for server in servers.values():
            server.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-base-path", required=True, help="TF Serving base path (DIR/<version>/saved_model.pb)")
    p.add_argument("--model-name", default="sicot")
    p.add_argument("--signature", default=contract.IMAGE_SIGNATURE)
    p.add_argument("--requests", type=int, default=200, help="sequential single-image requests")
    p.add_argument("--load-requests", type=int, default=400, help="requests in the throughput run")
    p.add_argument("--concurrency", type=int, default=8, help="client threads in the throughput run")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds over all configurations")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--batch-timeout-micros", type=int, default=2000)
    p.add_argument("--num-batch-threads", type=int, default=1)
    p.add_argument("--allowed-batch-sizes", default="", help="e.g. 2,4,8,16,32 (passed to the batching server)")
    p.add_argument("--intra-op", type=int, default=0,
                   help="--tensorflow-intra-op-parallelism of the servers and the in-process baseline")
    p.add_argument("--inter-op", type=int, default=0,
                   help="--tensorflow-inter-op-parallelism of the servers and the in-process baseline")
    p.add_argument("--out", help="also write the JSON document to this file")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("requests", "load_requests", "concurrency", "max_batch_size", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not os.path.isdir(args.model_base_path):
        p.error(f"--model-base-path {args.model_base_path}: no such directory")

    images = make_images(64, args.image_size, args.seed)
    started = time.time()
    load_before = os.getloadavg()
    results = run(args, images)
    text = json.dumps({
        "config": {k: v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "mean_image_bytes": int(np.mean([len(i) for i in images])),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "results": results,
        "total_s": round(time.time() - started, 1),
    }, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
