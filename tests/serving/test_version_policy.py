"""TF Serving's version policy: latest version, polling, load-before-unload, corrupt versions.

Uses the fixture model (a second, independent SavedModel with the same signatures) because two
distinguishable versions are needed and it loads in about a second."""
from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from sicot.serving.batching import BatchingOptions


def grpc_predict(stub, image, version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sicot"
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["image"].CopyFrom(tf.make_tensor_proto([image]))
    response = stub.Predict(request, 30)
    return response.model_spec.version.value, tf.make_ndarray(response.outputs["scores"])


def rest_predict(server, image):
    body = json.dumps({"instances": [{"image": {"b64": base64.b64encode(image).decode()}}]}).encode()
    with urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{server.rest_port}/v1/models/sicot:predict", data=body), timeout=30) as r:
        return np.array(json.loads(r.read())["predictions"][0]["scores"], np.float32)


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def states(stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "sicot"
    response = stub.GetModelStatus(request, 30)
    names = get_model_status_pb2.ModelVersionStatus.State.Name
    return {s.version: (names(s.state), s.status.error_code, s.status.error_message)
            for s in response.model_version_status}


def reference_scores(saved_model_dir, image):
    model = tf.saved_model.load(saved_model_dir)
    return model.signatures["serving_default"](image=tf.constant([image]))["scores"].numpy()


@pytest.mark.parametrize("batching", [None, BatchingOptions(max_batch_size=8, batch_timeout_micros=5000)],
                         ids=["direct", "batching"])
def test_new_version_swaps_in_without_failed_requests(fixture_base_path, fixture_saved_models, images,
                                                     push_version, server_factory, batching):
    fixture_server = server_factory(fixture_base_path, poll_seconds=0.2, batching=batching)
    image = images["red_jpeg"]
    v1_scores = reference_scores(fixture_saved_models[0], image)
    v2_scores = reference_scores(fixture_saved_models[1], image)
    assert not np.allclose(v1_scores, v2_scores)  # the two versions are distinguishable

    channel = grpc.insecure_channel(f"127.0.0.1:{fixture_server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    results, failures, stop = [], [], threading.Event()

    def client_loop(kind):
        while not stop.is_set() and len(results) < 5000:  # bounded
            try:
                if kind == "grpc":
                    version, scores = grpc_predict(stub, image)
                else:
                    version, scores = None, rest_predict(fixture_server, image)[None]
                results.append((kind, version, scores))
            except Exception as e:  # any failure during the swap is a test failure
                failures.append((kind, repr(e)))

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in ("grpc", "grpc", "rest")]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: len(results) >= 20)
        # Written the way TFX's Pusher writes: staging dir, saved_model.pb last, rename.
        push_version(fixture_saved_models[1], fixture_base_path, 2)
        assert wait_for(lambda: any(r[1] == 2 for r in results))
        count = len(results)
        assert wait_for(lambda: len(results) >= count + 20)
    finally:
        stop.set()
        for t in threads:
            t.join()

    assert failures == []
    versions = [r[1] for r in results if r[0] == "grpc"]
    first_v2 = versions.index(2)
    assert set(versions[:first_v2]) == {1} and set(versions[first_v2:]) == {2}  # no flapping back
    for kind, version, scores in results:  # every answer is exactly one of the two models
        assert np.allclose(scores, v1_scores, rtol=1e-6) or np.allclose(scores, v2_scores, rtol=1e-6)
    assert np.allclose(rest_predict(fixture_server, image), v2_scores[0], rtol=1e-6)

    model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    assert wait_for(lambda: states(model_stub) == {1: ("END", 0, ""), 2: ("AVAILABLE", 0, "")})
    with pytest_raises_not_found():
        grpc_predict(stub, image, version=1)  # the old version is unloaded
    channel.close()


class pytest_raises_not_found:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        assert exc_type is not None and issubclass(exc_type, grpc.RpcError), "expected NOT_FOUND"
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        return True


def test_corrupt_new_version_keeps_old_serving(fixture_server, fixture_base_path, images):
    image = images["green_png"]
    channel = grpc.insecure_channel(f"127.0.0.1:{fixture_server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    before = grpc_predict(stub, image)

    # Ignored: a non-integer directory and a version whose saved_model.pb is not there yet.
    os.makedirs(os.path.join(fixture_base_path, "latest"))
    os.makedirs(os.path.join(fixture_base_path, "7", "variables"))
    # Corrupt: version 5 with a saved_model.pb that is not a SavedModel.
    os.makedirs(os.path.join(fixture_base_path, "5"))
    with open(os.path.join(fixture_base_path, "5", "saved_model.pb"), "wb") as f:
        f.write(b"\x00garbage, not a protobuf")

    assert wait_for(lambda: states(model_stub).get(5, ("",))[0] == "END")
    status = states(model_stub)
    assert status[1] == ("AVAILABLE", 0, "")
    state, code, message = status[5]
    assert code != 0 and "Failed to load version 5" in message
    assert 7 not in status
    version, scores = grpc_predict(stub, image)
    assert version == 1 and np.allclose(scores, before[1])

    with urllib.request.urlopen(f"http://127.0.0.1:{fixture_server.rest_port}/v1/models/sicot") as r:
        rest_status = {s["version"]: s for s in json.loads(r.read())["model_version_status"]}
    assert rest_status["1"]["state"] == "AVAILABLE"
    assert rest_status["5"]["state"] == "END" and "Failed to load version 5" in \
        rest_status["5"]["status"]["error_message"]
    with urllib.request.urlopen(f"http://127.0.0.1:{fixture_server.rest_port}/monitoring/prometheus/metrics") as r:
        metrics = r.read().decode()
    assert 'sicot_serving_model_versions_failed{model="sicot"} 1.0' in metrics
    assert 'sicot_serving_model_version_loaded{model="sicot",version="1"} 1.0' in metrics
    channel.close()


def test_starts_on_older_version_when_latest_is_corrupt(tmp_path, fixture_saved_models, push_version,
                                                        server_factory):
    base = str(tmp_path / "model")
    push_version(fixture_saved_models[0], base, 3)
    os.makedirs(os.path.join(base, "4"))
    with open(os.path.join(base, "4", "saved_model.pb"), "wb") as f:
        f.write(b"truncated")
    server = server_factory(base, poll_seconds=0)
    assert server.manager.loaded_versions() == [3]
    assert {s.version: s.state for s in server.manager.states("sicot")} == {3: "AVAILABLE", 4: "END"}


def _with_warmup(saved_model_dir, target, images_to_send):
    """A copy of the SavedModel with assets.extra/tf_serving_warmup_requests (TF Serving's format)."""
    import shutil

    from tensorflow_serving.apis import prediction_log_pb2

    shutil.copytree(saved_model_dir, target)
    os.makedirs(os.path.join(target, "assets.extra"))
    with tf.io.TFRecordWriter(os.path.join(target, "assets.extra", "tf_serving_warmup_requests")) as writer:
        for image in images_to_send:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "sicot"
            request.inputs["image"].CopyFrom(tf.make_tensor_proto([image]))
            writer.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    return target


def test_warmup_requests_run_before_available_and_a_failing_warmup_fails_the_load(
        tmp_path, fixture_saved_models, images, push_version, server_factory):
    base = str(tmp_path / "model")
    good = _with_warmup(fixture_saved_models[0], str(tmp_path / "good"), [images["red_jpeg"], images["green_png"]])
    push_version(good, base, 1)
    server = server_factory(base, poll_seconds=0.2)
    assert server.manager.get("sicot").warmup_requests == 2
    metrics = server.metrics.exposition().decode()
    assert 'sicot_serving_batch_size_count{model="sicot",signature="serving_default"} 2.0' in metrics

    bad = _with_warmup(fixture_saved_models[1], str(tmp_path / "bad"), [b"not an image"])
    push_version(bad, base, 2)
    assert wait_for(lambda: {s.version: s.state for s in server.manager.states("sicot")}.get(2) == "END")
    failed = {s.version: s for s in server.manager.states("sicot")}[2]
    assert "warmup record 1 failed" in failed.error_message
    assert server.manager.loaded_versions() == [1]
    assert server.predict("sicot", None, "", {"image": np.array([images["blue_jpeg"]], object)})[0] == 1
