"""An enrolled model served: `sicot predict --search` (the model's exact search signatures, and
a `sicot index` FAISS index), and the swap from the trained version to the enrolled one under
load with no failed request. Fixtures (tiny trained + enrolled models): tests/conftest.py."""
from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from sicot import contract
from sicot.cli import main
from sicot.serving.server import ModelServer, ServerOptions
from sicot.trainer.evaluation.band_accuracy import resolve_saved_model_dir

PHOTO = os.path.join("photos", "teal_new0.png")  # a catalogue photo of the enrolled SKU


def _server(base_path, **kwargs):
    options = ServerOptions(model_name="sicot", model_base_path=base_path, grpc_port=0,
                            rest_port=0, **kwargs)
    return ModelServer(options).start()


@pytest.fixture()
def enrolled_server(enrolled, push_version, tmp_path):
    base = str(tmp_path / "base")
    push_version(resolve_saved_model_dir(enrolled["out"]), base, 1)
    server = _server(base, poll_seconds=0)
    yield server
    server.stop()


def _predict_json(capsys, *argv):
    code = main(["predict", *argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_predict_search_finds_the_catalogue_photo_first(enrolled_server, catalogue, capsys):
    photo = os.path.join(os.path.dirname(catalogue), PHOTO)
    for transport in ([], ["--rest"]):
        port = enrolled_server.rest_port if transport else enrolled_server.grpc_port
        found = _predict_json(capsys, "--server", f"127.0.0.1:{port}", "--image", photo,
                              "--search", *transport)
        assert found["hits"][0]["item_id"] == f"teal_new/{PHOTO}"
        assert found["hits"][0]["label"] == "teal_new"
        assert found["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
        with_text = _predict_json(capsys, "--server", f"127.0.0.1:{port}", "--image", photo,
                                  "--search", "--title", "word1 teal", "--tags", "gift",
                                  *transport)
        assert with_text["source"] == f"signature {contract.SEARCH_IMAGE_TEXT_SIGNATURE}"
        assert with_text["hits"][0]["item_id"] == f"teal_new/{PHOTO}"
    code = main(["predict", "--server", f"127.0.0.1:{enrolled_server.grpc_port}", "--image",
                 photo, "--search"])
    out = capsys.readouterr().out
    assert code == 0 and f"teal_new/{PHOTO}" in out.splitlines()[1]


@pytest.mark.parametrize("kind", ["hnsw", "flat"])
def test_predict_search_through_a_sicot_index(enrolled, enrolled_server, catalogue, capsys,
                                              tmp_path, kind):
    index = str(tmp_path / "index")
    assert main(["index", "--model", enrolled["out"], "--out", index, "--kind", kind]) == 0
    meta = json.load(open(os.path.join(index, "index.json")))
    assert meta["items"] == enrolled["report"]["items"] and meta["kind"] == kind
    assert f"{meta['items']} items, {kind}" in capsys.readouterr().out
    photo = os.path.join(os.path.dirname(catalogue), PHOTO)
    found = _predict_json(capsys, "--server", f"127.0.0.1:{enrolled_server.grpc_port}",
                          "--image", photo, "--search", "--index", index)
    assert found["hits"][0]["item_id"] == f"teal_new/{PHOTO}"
    assert found["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    # the same catalogue indexed from its file, with the trained model
    again = str(tmp_path / "again")
    assert main(["index", "--model", enrolled["out"], "--catalog", str(catalogue), "--out",
                 again, "--kind", kind]) == 0
    assert json.load(open(os.path.join(again, "index.json")))["items"] == meta["items"]
    capsys.readouterr()
    code = main(["predict", "--server", f"127.0.0.1:{enrolled_server.grpc_port}", "--image",
                 photo, "--search", "--index", index, "--title", "x"])
    assert code == 2 and "image-only" in capsys.readouterr().err


def _grpc_classes(stub, image):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sicot"
    request.inputs[contract.IMAGE_KEY].CopyFrom(tf.make_tensor_proto([image]))
    response = stub.Predict(request, 30)
    return response.model_spec.version.value, tf.make_ndarray(
        response.outputs[contract.CLASSES_OUTPUT])[0]


def _rest_classes(server, image):
    body = json.dumps({"instances": [{contract.IMAGE_KEY: {
        "b64": base64.b64encode(image).decode()}}]}).encode()
    with urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{server.rest_port}/v1/models/sicot:predict", data=body),
            timeout=30) as r:
        return json.loads(r.read())["predictions"][0][contract.CLASSES_OUTPUT]


def test_swap_to_the_enrolled_version_under_load_fails_no_request(trained, enrolled, catalogue,
                                                                   push_version, tmp_path):
    """Pushed like any version (TFX Pusher's way): the server loads it, then moves traffic,
    and no request fails on the way; the enrolled classes and search answer afterwards."""
    base = str(tmp_path / "served")
    push_version(resolve_saved_model_dir(trained["sicot"]), base, 1)
    server = _server(base, poll_seconds=0.2)
    photo = open(os.path.join(os.path.dirname(catalogue), PHOTO), "rb").read()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    results, failures, stop = [], [], threading.Event()

    def client_loop(kind):
        while not stop.is_set() and len(results) < 5000:
            try:
                if kind == "grpc":
                    results.append(("grpc",) + _grpc_classes(stub, photo))
                else:
                    results.append(("rest", None, _rest_classes(server, photo)))
            except Exception as e:  # any failure during the swap fails the test
                failures.append((kind, repr(e)))

    def wait_for(condition, timeout=120.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not condition():
            time.sleep(0.05)
        return condition()

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in ("grpc", "grpc", "rest")]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: len(results) >= 10)
        push_version(resolve_saved_model_dir(enrolled["out"]), base, 2)
        assert wait_for(lambda: any(r[1] == 2 for r in results))
        count = len(results)
        assert wait_for(lambda: len(results) >= count + 10)
    finally:
        stop.set()
        for t in threads:
            t.join()
        channel.close()
    try:
        assert failures == []
        versions = [r[1] for r in results if r[0] == "grpc"]
        first = versions.index(2)
        assert set(versions[:first]) == {1} and set(versions[first:]) == {2}  # no flapping
        names = json.load(open(os.path.join(enrolled["out"], "run", "class_names.json")))
        for kind, version, classes in results:  # version 1 knows only the trained classes
            if version == 1:
                assert {c.decode() for c in classes} <= set(names[:-2])
        # the new version answers the search signature the old one did not have
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "sicot"
            request.model_spec.signature_name = contract.SEARCH_IMAGE_SIGNATURE
            request.inputs[contract.IMAGE_KEY].CopyFrom(tf.make_tensor_proto([photo]))
            response = stub.Predict(request, 30)
            ids = tf.make_ndarray(response.outputs[contract.ITEM_IDS_OUTPUT])[0]
            assert response.model_spec.version.value == 2
            assert ids[0].decode() == f"teal_new/{PHOTO}"
    finally:
        server.stop()
