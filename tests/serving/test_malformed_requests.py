"""Bad requests get TF Serving's status and a message naming the problem; the server keeps serving.

Runs against the real SICoT export (its Transform graph decodes the image, so "bytes that are not
an image" fails inside the model, as it would in TF Serving)."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

MODEL = "sicot"


def post(server, path, body: bytes):
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(server, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}{path}", timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def assert_still_serving(server, image):
    status, doc = post(server, f"/v1/models/{MODEL}:predict",
                       json.dumps({"instances": [{"image": b64(image)}]}).encode())
    assert status == 200 and len(doc["predictions"]) == 1, doc


REST_CASES = [
    # (id, path, body, HTTP status, words the error must contain)
    ("bad_json", f"/v1/models/{MODEL}:predict", b'{"instances": [', 400, "JSON Parse error"),
    ("empty_body", f"/v1/models/{MODEL}:predict", b"", 400, "document is empty"),
    ("not_an_object", f"/v1/models/{MODEL}:predict", b"[1, 2]", 400, "Is not object"),
    ("no_instances_or_inputs", f"/v1/models/{MODEL}:predict", b'{"foo": 1}', 400,
     "Missing 'inputs' or 'instances' key"),
    ("both_formats", f"/v1/models/{MODEL}:predict", b'{"instances": [1], "inputs": [1]}', 400,
     "only one of 'inputs' or 'instances'"),
    ("unknown_input", f"/v1/models/{MODEL}:predict",
     json.dumps({"instances": [{"image": {"b64": "AAAA"}, "colour": "red"}]}).encode(), 400,
     "does not have named input: colour"),
    ("unknown_columnar_input", f"/v1/models/{MODEL}:predict",
     json.dumps({"inputs": {"image": [{"b64": "AAAA"}], "colour": ["red"]}}).encode(), 400,
     "Unknown named input(s): colour"),
    ("missing_input", f"/v1/models/{MODEL}:predict",
     json.dumps({"signature_name": "serving_image_text",
                 "instances": [{"image": {"b64": "AAAA"}, "title": "x"}]}).encode(), 400,
     "must only have keys: image,tags,title"),
    ("not_base64", f"/v1/models/{MODEL}:predict",
     json.dumps({"instances": [{"image": {"b64": "not*base64!"}}]}).encode(), 400, "not valid base64"),
    ("wrong_type", f"/v1/models/{MODEL}:predict",
     json.dumps({"instances": [{"image": 3.5}]}).encode(), 400, "is not of expected type: string"),
    # rank 2 for a rank-1 input: refused before decoding (ragged rows of a rank-2 input: test_fuzz_bodies.py)
    ("ragged_rows", f"/v1/models/{MODEL}:predict",
     json.dumps({"inputs": {"image": [[{"b64": "AAAA"}], []]}}).encode(), 400, "nested 5 deep"),
    ("not_an_image", f"/v1/models/{MODEL}:predict",
     json.dumps({"instances": [{"image": b64(b"this is not a picture")}]}).encode(), 400, "image"),
    ("unknown_signature", f"/v1/models/{MODEL}:predict",
     json.dumps({"signature_name": "serving_nope", "instances": [1]}).encode(), 400,
     'signature name: "serving_nope" not found'),
    ("unknown_model", "/v1/models/nope:predict",
     json.dumps({"instances": [{"image": {"b64": "AAAA"}}]}).encode(), 404,
     "Servable not found for request: Latest(nope)"),
    ("unknown_version", f"/v1/models/{MODEL}/versions/7:predict",
     json.dumps({"instances": [{"image": {"b64": "AAAA"}}]}).encode(), 404,
     f"Servable not found for request: Specific({MODEL}, 7)"),
    ("version_label", f"/v1/models/{MODEL}/labels/canary:predict",
     json.dumps({"instances": [1]}).encode(), 400, "Unrecognized servable version label: canary"),
    ("classify", f"/v1/models/{MODEL}:classify", b'{"examples": [{}]}', 501, "predict signatures only"),
    ("malformed_path", f"/v1/models/{MODEL}:explain", b"{}", 400, "Malformed request"),
]


@pytest.mark.parametrize("path,body,status,words", [c[1:] for c in REST_CASES], ids=[c[0] for c in REST_CASES])
def test_rest_bad_request(sicot_server, images, path, body, status, words):
    got_status, doc = post(sicot_server, path, body)
    assert got_status == status, doc
    assert set(doc) == {"error"} and words in doc["error"], doc
    assert_still_serving(sicot_server, images["red_jpeg"])


def test_rest_oversize_body_is_413(sicot_server, images):
    big = json.dumps({"instances": [{"image": b64(b"\xff" * (1024 * 1024))}]}).encode()
    status, doc = post(sicot_server, f"/v1/models/{MODEL}:predict", big)
    assert status == 413
    assert "exceeds the limit of 1048576 bytes" in doc["error"]
    assert_still_serving(sicot_server, images["red_jpeg"])


def test_rest_status_errors(sicot_server, images):
    assert get(sicot_server, "/v1/models/nope") == (404, {"error": "Could not find any versions of model nope"})
    assert get(sicot_server, f"/v1/models/{MODEL}/versions/9") == \
        (404, {"error": f"Could not find version 9 of model {MODEL}"})
    status, doc = get(sicot_server, f"/v1/models/{MODEL}/versions/9/metadata")
    assert status == 404 and "Specific(sicot, 9)" in doc["error"]
    assert_still_serving(sicot_server, images["red_jpeg"])


@pytest.fixture(scope="module")
def stub(sicot_server):
    channel = grpc.insecure_channel(f"127.0.0.1:{sicot_server.grpc_port}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel), model_service_pb2_grpc.ModelServiceStub(channel)
    channel.close()


def predict_request(model=MODEL, version=None, signature="", **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def grpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, 60)
    return info.value


def test_grpc_bad_requests(stub, images):
    predictions, models = stub
    cases = [
        (predict_request(model="nope", image=[images["red_jpeg"]]), grpc.StatusCode.NOT_FOUND, "Latest(nope)"),
        (predict_request(version=5, image=[images["red_jpeg"]]), grpc.StatusCode.NOT_FOUND, "Specific(sicot, 5)"),
        (predict_request(image=[images["red_jpeg"]], colour=[b"red"]), grpc.StatusCode.INVALID_ARGUMENT,
         "Sent extra: {colour}"),
        (predict_request(signature="serving_image_text", image=[images["red_jpeg"]]),
         grpc.StatusCode.INVALID_ARGUMENT, "Missing but required: {tags,title}"),
        (predict_request(image=[b"\x00\x01 definitely not an image"]), grpc.StatusCode.INVALID_ARGUMENT, "image"),
        (predict_request(image=[1.5, 2.5]), grpc.StatusCode.INVALID_ARGUMENT, "expects string"),
        (predict_request(image=[[images["red_jpeg"]]]), grpc.StatusCode.INVALID_ARGUMENT, "has shape [1, 1]"),
        (predict_request(signature="nope", image=[images["red_jpeg"]]), grpc.StatusCode.INVALID_ARGUMENT,
         'signature name: "nope" not found'),
        (predict_request(image=[b"\xff" * (1024 * 1024 + 10)]), grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
    ]
    for request, code, words in cases:
        error = grpc_error(predictions.Predict, request)
        assert error.code() == code, (words, error.details())
        assert words in error.details(), error.details()

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = MODEL
    error = grpc_error(predictions.Classify, classify)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED and "Predict" in error.details()

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    error = grpc_error(models.GetModelStatus, status)
    assert error.code() == grpc.StatusCode.NOT_FOUND

    ok = predictions.Predict(predict_request(image=[images["red_jpeg"]]), 60)
    assert tf.make_ndarray(ok.outputs["scores"]).shape[0] == 1


def test_errors_are_counted_in_metrics(sicot_server):
    post(sicot_server, "/v1/models/nope:predict", b'{"instances": [1]}')
    with urllib.request.urlopen(f"http://127.0.0.1:{sicot_server.rest_port}/monitoring/prometheus/metrics") as r:
        text = r.read().decode()
    assert 'sicot_serving_requests_total{api="rest",method="predict",model="sicot",status="NOT_FOUND"}' in text
