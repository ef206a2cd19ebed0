"""End to end on a real SICoT export: gRPC (official tensorflow-serving-api stubs) and REST
answers equal the in-process SavedModel, metadata lists the signatures, status is AVAILABLE."""
from __future__ import annotations

import base64
import json
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from sicot.contract import SIGNATURES

MODEL = "sicot"


@pytest.fixture(scope="module")
def channel(sicot_server):
    ch = grpc.insecure_channel(f"127.0.0.1:{sicot_server.grpc_port}")
    yield ch
    ch.close()


def in_process(model, signature, **inputs):
    outputs = model.signatures[signature](**{k: tf.constant(v, tf.string) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}


def assert_outputs_equal(got: dict, want: dict):
    assert set(got) == set(want) == {"classes", "class_ids", "scores", "embedding"}
    for key, expected in want.items():
        actual = np.asarray(got[key])
        if expected.dtype == object:
            assert [[c.decode() for c in row] for row in expected] == \
                [[c.decode() if isinstance(c, bytes) else c for c in row] for row in actual], key
        else:
            assert actual.shape == expected.shape, key
            np.testing.assert_allclose(actual.astype(expected.dtype), expected, rtol=1e-6, atol=1e-7,
                                       err_msg=key)


def rest(server, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{server.rest_port}{path}", data=data), timeout=60) as r:
        return r.status, json.loads(r.read())


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def test_grpc_predict_image_only_equals_in_process(channel, sicot_in_process, images):
    batch = [images["red_jpeg"], images["green_png"], images["blue_jpeg"]]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL  # no signature_name: serving_default, no version: latest
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(batch))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 60)

    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    got = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    assert_outputs_equal(got, in_process(sicot_in_process, "serving_default", image=batch))
    assert got["scores"].shape == (3, 3) and got["embedding"].shape[0] == 3


def test_grpc_predict_image_text_and_output_filter(channel, sicot_in_process, images):
    image, title, tags = [images["red_jpeg"]], [b"word0 sale"], [b"gift|shop"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "serving_image_text"
    for name, value in (("image", image), ("title", title), ("tags", tags)):
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    request.output_filter.extend(["classes", "scores"])
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 60)

    want = in_process(sicot_in_process, "serving_image_text", image=image, title=title, tags=tags)
    assert set(response.outputs) == {"classes", "scores"}
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["classes"]), want["classes"])
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["scores"]), want["scores"], rtol=1e-6)


def test_grpc_predict_serialized_examples(channel, sicot_in_process, images):
    example = tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[images["green_png"]])),
        "title": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"word1"]))})).SerializeToString()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "serving_examples"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example]))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 60)
    got = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    assert_outputs_equal(got, in_process(sicot_in_process, "serving_examples", examples=[example]))


def test_rest_predict_image_only_row_format_equals_in_process(sicot_server, sicot_in_process, images):
    batch = [images["red_jpeg"], images["blue_jpeg"]]
    status, doc = rest(sicot_server, f"/v1/models/{MODEL}:predict",
                       {"instances": [{"image": b64(img)} for img in batch]})
    assert status == 200 and set(doc) == {"predictions"}
    got = {k: [p[k] for p in doc["predictions"]] for k in doc["predictions"][0]}
    assert_outputs_equal(got, in_process(sicot_in_process, "serving_default", image=batch))

    # A single-input signature also takes bare values as instances, on an explicit version path.
    status, bare = rest(sicot_server, f"/v1/models/{MODEL}/versions/1:predict",
                        {"instances": [b64(img) for img in batch]})
    assert bare == doc


def test_rest_predict_image_text_rows_and_columns_equal_in_process(sicot_server, sicot_in_process, images):
    image, titles, tags = [images["red_jpeg"], images["green_png"]], ["word0 sale", ""], ["gift|shop", ""]
    want = in_process(sicot_in_process, "serving_image_text", image=image,
                      title=[t.encode() for t in titles], tags=[t.encode() for t in tags])

    _, rows = rest(sicot_server, f"/v1/models/{MODEL}:predict", {
        "signature_name": "serving_image_text",
        "instances": [{"image": b64(i), "title": t, "tags": g} for i, t, g in zip(image, titles, tags)]})
    assert_outputs_equal({k: [p[k] for p in rows["predictions"]] for k in rows["predictions"][0]}, want)

    _, columns = rest(sicot_server, f"/v1/models/{MODEL}:predict", {
        "signature_name": "serving_image_text",
        "inputs": {"image": [b64(i) for i in image], "title": titles, "tags": tags}})
    assert set(columns) == {"outputs"}
    assert_outputs_equal(columns["outputs"], want)


def test_grpc_metadata_lists_the_export_signatures(channel):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    request.metadata_field.append("signature_def")
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, 60)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert response.model_spec.version.value == 1
    assert set(SIGNATURES) <= set(signature_map.signature_def)
    default = signature_map.signature_def["serving_default"]
    assert list(default.inputs) == ["image"]
    assert default.inputs["image"].dtype == tf.string.as_datatype_enum
    assert set(default.outputs) == {"classes", "class_ids", "scores", "embedding"}
    assert set(signature_map.signature_def["serving_image_text"].inputs) == {"image", "title", "tags"}


def test_rest_metadata_is_tf_serving_json(sicot_server):
    status, doc = rest(sicot_server, f"/v1/models/{MODEL}/metadata")
    assert status == 200
    assert doc["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signatures = doc["metadata"]["signature_def"]["signature_def"]
    assert set(SIGNATURES) <= set(signatures)
    image_text = signatures["serving_image_text"]
    assert image_text["method_name"] == "tensorflow/serving/predict"
    assert image_text["inputs"]["title"]["dtype"] == "DT_STRING"
    assert image_text["inputs"]["title"]["tensor_shape"] == {"dim": [{"size": "-1"}]}


def test_model_status_available_over_grpc_and_rest(channel, sicot_server):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, 60)
    assert [(s.version, s.state) for s in response.model_version_status] == \
        [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    assert response.model_version_status[0].status.error_code == 0

    status, doc = rest(sicot_server, f"/v1/models/{MODEL}")
    assert status == 200
    assert doc == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    _, doc = rest(sicot_server, f"/v1/models/{MODEL}/versions/1")
    assert doc["model_version_status"][0]["state"] == "AVAILABLE"
