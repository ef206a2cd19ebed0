"""Dynamic batching: concurrent requests are merged into one call and each caller gets its rows."""
from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from sicot.serving.batching import BatchingOptions, SignatureBatcher
from sicot.serving.errors import ServingError


class RecordingModel:
    """A signature stand-in that records the batch sizes it was called with: out = 2 * x + row id."""

    def __init__(self, delay=0.0, fail_on=None):
        self.calls = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, inputs):
        x = inputs["x"]
        with self.lock:
            self.calls.append(len(x))
        if self.fail_on is not None and self.fail_on in x:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"bad value {self.fail_on}")
        time.sleep(self.delay)
        return {"y": 2 * x, "total": np.full((len(x),), len(x))}


def test_batcher_merges_concurrent_requests_and_splits_rows():
    model = RecordingModel()
    seen = []
    batcher = SignatureBatcher(model, BatchingOptions(max_batch_size=8, batch_timeout_micros=300_000),
                               on_batch=seen.append)
    try:
        requests = [np.arange(i * 10, i * 10 + n, dtype=np.float32) for i, n in enumerate([1, 2, 1, 3])]
        futures = [batcher.submit({"x": r}) for r in requests]
        results = [f.result(10) for f in futures]
    finally:
        batcher.close()
    assert model.calls == [7] and seen == [7]  # one call for all four requests
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], 2 * request)
        np.testing.assert_array_equal(result["total"], [7] * len(request))


def test_batcher_respects_max_batch_size_and_timeout():
    model = RecordingModel()
    batcher = SignatureBatcher(model, BatchingOptions(max_batch_size=4, batch_timeout_micros=200_000))
    try:
        futures = [batcher.submit({"x": np.array([float(i)])}) for i in range(10)]
        results = [f.result(10)["y"][0] for f in futures]
        started = time.monotonic()
        batcher.submit({"x": np.array([1.0])}).result(10)  # alone: waits for the timeout, then runs
        waited = time.monotonic() - started
    finally:
        batcher.close()
    assert results == [2.0 * i for i in range(10)]
    assert model.calls[:3] == [4, 4, 2] and model.calls[3] == 1
    assert 0.15 < waited < 5


def test_batcher_keeps_incompatible_shapes_apart_and_runs_oversize_alone():
    model = RecordingModel()
    batcher = SignatureBatcher(model, BatchingOptions(max_batch_size=4, batch_timeout_micros=200_000))
    try:
        a = batcher.submit({"x": np.ones((1, 2))})
        b = batcher.submit({"x": np.ones((1, 3))})  # other row shape: cannot share a batch with a
        big = batcher.submit({"x": np.ones((6, 2))})  # more rows than max_batch_size: alone
        assert a.result(10)["y"].shape == (1, 2)
        assert b.result(10)["y"].shape == (1, 3)
        assert big.result(10)["y"].shape == (6, 2)
    finally:
        batcher.close()
    assert sorted(model.calls) == [1, 1, 6]


def test_batcher_error_reaches_every_caller_of_the_batch_and_queue_limit():
    model = RecordingModel(fail_on=13.0)
    batcher = SignatureBatcher(model, BatchingOptions(max_batch_size=4, batch_timeout_micros=200_000))
    try:
        futures = [batcher.submit({"x": np.array([v])}) for v in (1.0, 13.0)]
        for f in futures:
            with pytest.raises(ServingError, match="bad value 13"):
                f.result(10)
        assert batcher.submit({"x": np.array([2.0])}).result(10)["y"][0] == 4.0  # still working
    finally:
        batcher.close()

    slow = SignatureBatcher(RecordingModel(delay=0.5),
                            BatchingOptions(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=2))
    try:
        accepted, rejected = [], []
        for i in range(6):
            try:
                accepted.append(slow.submit({"x": np.array([float(i)])}))
            except ServingError as e:
                rejected.append(e)
        assert rejected and all(e.code == grpc.StatusCode.RESOURCE_EXHAUSTED for e in rejected)
        assert all(f.result(10) is not None for f in accepted)
    finally:
        slow.close()


def test_batcher_pads_to_allowed_batch_sizes_and_returns_only_real_rows():
    model = RecordingModel()
    options = BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000, allowed_batch_sizes=(2, 4, 8))
    batcher = SignatureBatcher(model, options)
    try:
        requests = [np.array([10.0 * i + j for j in range(n)], np.float32) for i, n in enumerate([1, 2])]
        results = [f.result(10) for f in [batcher.submit({"x": r}) for r in requests]]
        alone = batcher.submit({"x": np.array([7.0], np.float32)}).result(10)
    finally:
        batcher.close()
    assert model.calls == [4, 2]  # 3 rows padded to 4; 1 row padded to 2
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], 2 * request)
        np.testing.assert_array_equal(result["total"], [4] * len(request))
    np.testing.assert_array_equal(alone["y"], [14.0])
    assert [options.padded_size(n) for n in (1, 2, 3, 5, 8, 9)] == [2, 2, 4, 8, 8, 9]


def test_batching_options_reject_allowed_sizes_tf_serving_rejects():
    with pytest.raises(ValueError, match="must equal max_batch_size"):
        BatchingOptions(max_batch_size=32, allowed_batch_sizes=(8, 16))
    with pytest.raises(ValueError, match="increasing"):
        BatchingOptions(max_batch_size=8, allowed_batch_sizes=(4, 2, 8))
    with pytest.raises(ValueError, match="num_batch_threads"):
        BatchingOptions(num_batch_threads=0)


def test_batcher_runs_num_batch_threads_batches_at_once():
    for threads, want_overlap in ((1, False), (2, True)):
        active, peak, lock = [0], [0], threading.Lock()

        def slow(inputs):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.3)
            with lock:
                active[0] -= 1
            return {"y": inputs["x"]}

        batcher = SignatureBatcher(slow, BatchingOptions(max_batch_size=1, batch_timeout_micros=0,
                                                         num_batch_threads=threads))
        try:
            futures = [batcher.submit({"x": np.array([float(i)])}) for i in range(4)]
            assert [f.result(10)["y"][0] for f in futures] == [0.0, 1.0, 2.0, 3.0]
        finally:
            batcher.close()
        assert (peak[0] == 2) if want_overlap else (peak[0] == 1), (threads, peak[0])


def test_batch_timeout_counts_from_the_first_request_arrival():
    """Requests that queued while the worker was busy have waited already: no second timeout."""
    model = RecordingModel(delay=0.4)
    batcher = SignatureBatcher(model, BatchingOptions(max_batch_size=8, batch_timeout_micros=300_000))
    try:
        first = batcher.submit({"x": np.array([1.0])})
        time.sleep(0.35)  # the first batch closes (timeout) and runs for 0.4 s
        queued = [batcher.submit({"x": np.array([float(i)])}) for i in range(3)]
        first.result(10)
        picked_up = time.monotonic()
        for f in queued:
            f.result(10)
        waited = time.monotonic() - picked_up
    finally:
        batcher.close()
    assert model.calls == [1, 3]
    # 0.4 s model call only; a fresh 0.3 s timeout would make it about 0.7 s.
    assert waited < 0.65, waited


def _batch_histogram(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics") as r:
        text = r.read().decode()
    def value(series):  # absent before the first call
        match = re.search(series + r'\{model="sicot",signature="serving_default"\} (\S+)', text)
        return float(match.group(1)) if match else 0.0

    count, rows = value("sicot_serving_batch_size_count"), value("sicot_serving_batch_size_sum")
    return count, rows


def test_server_batches_concurrent_grpc_and_rest_requests(batching_server, fixture_saved_models, images):
    reference = tf.saved_model.load(fixture_saved_models[0]).signatures["serving_default"]
    pictures = [images["red_jpeg"], images["green_png"], images["blue_jpeg"]]
    requests = [[pictures[i % 3]] * (1 + i % 2) + [pictures[(i + 1) % 3]] for i in range(8)]  # 2-3 rows each
    channel = grpc.insecure_channel(f"127.0.0.1:{batching_server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def via_grpc(batch):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "sicot"
        request.inputs["image"].CopyFrom(tf.make_tensor_proto(batch))
        return tf.make_ndarray(stub.Predict(request, 30).outputs["scores"])

    def via_rest(batch):
        body = json.dumps({"inputs": [{"b64": base64.b64encode(b).decode()} for b in batch]}).encode()
        url = f"http://127.0.0.1:{batching_server.rest_port}/v1/models/sicot:predict"
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
            return np.array(json.loads(r.read())["outputs"]["scores"], np.float32)

    count_before, rows_before = _batch_histogram(batching_server)
    barrier = threading.Barrier(len(requests))

    def send(i):
        barrier.wait()
        return (via_grpc if i % 2 else via_rest)(requests[i])

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(send, range(len(requests))))
    channel.close()

    for batch, scores in zip(requests, answers):  # each caller got its own rows, in order
        want = reference(image=tf.constant(batch))["scores"].numpy()
        np.testing.assert_allclose(scores, want, rtol=1e-6)
    count, rows = _batch_histogram(batching_server)
    total_rows = sum(len(b) for b in requests)
    assert rows - rows_before == total_rows
    # 8 requests with a 200 ms window and max 16 rows: merged into far fewer calls than requests.
    assert count - count_before < len(requests) / 2, (count - count_before, len(requests))


def test_batch_closes_at_once_when_no_request_is_arriving():
    """Inside the server the batcher knows how many requests are still being received; with
    none, waiting out the timeout cannot add company to the batch."""
    arriving = [0]
    model = RecordingModel()
    batcher = SignatureBatcher(model, BatchingOptions(max_batch_size=8, batch_timeout_micros=2_000_000),
                               arriving=lambda: arriving[0])
    try:
        started = time.monotonic()
        batcher.submit({"x": np.array([1.0])}).result(10)
        alone = time.monotonic() - started
        arriving[0] = 1  # one more on its way: the batch waits for it (up to the timeout)
        first = batcher.submit({"x": np.array([2.0])})
        time.sleep(0.3)
        arriving[0] = 0
        second = batcher.submit({"x": np.array([3.0])})  # submit wakes the forming batch
        assert first.result(10)["y"][0] == 4.0 and second.result(10)["y"][0] == 6.0
    finally:
        batcher.close()
    assert alone < 1.0, alone
    assert model.calls == [1, 2]


def test_batch_still_waits_while_another_batch_runs():
    """Under load the callers of a running batch send again soon: a forming batch keeps waiting
    (up to its timeout) for them, so requests are still merged."""
    model = RecordingModel(delay=0.4)
    batcher = SignatureBatcher(model, BatchingOptions(max_batch_size=8, batch_timeout_micros=300_000,
                                                      num_batch_threads=2), arriving=lambda: 0)
    try:
        first = batcher.submit({"x": np.array([1.0])})  # runs at once: nothing else in the server
        time.sleep(0.1)
        second = batcher.submit({"x": np.array([2.0])})  # the first batch is running: waits
        time.sleep(0.1)
        third = batcher.submit({"x": np.array([3.0])})
        for f in (first, second, third):
            f.result(10)
    finally:
        batcher.close()
    assert model.calls == [1, 2]


def test_lone_request_to_a_batching_server_does_not_wait_for_the_timeout(batching_server, images):
    """batch_timeout_micros is 200 ms here; a request with nobody else in the server runs at once
    over both front ends (before, each waited the whole 200 ms)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{batching_server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sicot"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto([images["red_jpeg"]]))
    body = json.dumps({"instances": [{"b64": base64.b64encode(images["red_jpeg"]).decode()}]}).encode()
    url = f"http://127.0.0.1:{batching_server.rest_port}/v1/models/sicot:predict"
    stub.Predict(request, 30)  # first calls allocate
    timings = []
    for _ in range(3):
        started = time.monotonic()
        stub.Predict(request, 30)
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
            r.read()
        timings.append(time.monotonic() - started)
    channel.close()
    assert min(timings) < 0.2, timings  # two requests: 0.4 s or more if each waited the window
