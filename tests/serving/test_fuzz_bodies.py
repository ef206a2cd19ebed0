"""Fuzzed bodies over REST and gRPC: a client's mistake never gets a 5xx, INTERNAL or UNKNOWN.

hypothesis generates malformed requests of every kind in issue 26 and sends each to a live
server on 127.0.0.1: JSON nested far past the inputs' rank (up to 200,000 levels), deep objects,
truncated JSON, bytes that are not UTF-8, bare numbers / null / strings, huge strings and numbers,
lone surrogates, random JSON in every position, empty batches; over gRPC TensorProtos of every
dtype with odd shapes and contents, unknown models, signatures and inputs, and request bytes that
are not a PredictRequest at all. Every answer must be 2xx or 4xx (gRPC: OK or a client-error
code) with a short message, a success must answer one row per row sent, and the next valid
request must still get the answer it got at the start. `test_named_rest_bodies` and
`test_named_grpc_requests` pin the codes and messages listed in docs/reliability.md.

Two servers: the fixture model of conftest.py (string inputs; the image is decoded inside the
model) and a numeric model (float32 [None, 2] and int64 [None]) for the dtypes and ranks the
first lacks. About 15 s on the shared 2-core machine.
"""
from __future__ import annotations

import base64
import json
import shutil
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from sicot.serving.server import ModelServer, ServerOptions

MODEL = "sicot"
MAX_REQUEST_BYTES = 1024 * 1024
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# What a client's mistake may get: never INTERNAL, UNKNOWN, DATA_LOSS or UNAVAILABLE.
CLIENT_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED}
PREDICT = "/tensorflow.serving.PredictionService/Predict"
SIGNATURES = ["serving_default", "serving_image_text", "serving_examples", "", "serving_nope"]
INPUTS = ["image", "title", "tags", "examples", "weights", "ids"]


# -- servers ----------------------------------------------------------------------------------
def write_numeric_model(export_dir: str) -> str:
    class NumericModel(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="weights"),
                                      tf.TensorSpec([None], tf.int64, name="ids")])
        def serve(self, weights, ids):
            return {"total": tf.reduce_sum(weights, axis=1) + tf.cast(ids, tf.float32)}

    module = NumericModel()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
    return export_dir


class Target:
    """A live server, its gRPC channel, and one valid request with the answer it must keep."""

    def __init__(self, server: ModelServer, rest_body: dict, grpc_inputs: dict):
        self.server = server
        self.rest_body = json.dumps(rest_body).encode()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.raw_predict = self.channel.unary_unary(PREDICT)  # bytes in, bytes out
        self.grpc_request = predict_pb2.PredictRequest()
        self.grpc_request.model_spec.name = MODEL
        for name, value in grpc_inputs.items():
            self.grpc_request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        status, self.rest_answer = post(self, self.rest_body)
        assert status == 200, self.rest_answer
        self.grpc_answer = self.grpc_outputs()

    def grpc_outputs(self) -> dict:
        response = self.stub.Predict(self.grpc_request, 60)
        return {k: tf.make_ndarray(v).tolist() for k, v in response.outputs.items()}

    def assert_still_serving(self) -> None:
        assert post(self, self.rest_body) == (200, self.rest_answer)
        assert self.grpc_outputs() == self.grpc_answer

    def close(self) -> None:
        self.channel.close()
        self.server.stop()


def start(base) -> ModelServer:
    return ModelServer(ServerOptions(model_name=MODEL, model_base_path=str(base), grpc_port=0,
                                     rest_port=0, poll_seconds=0,
                                     max_request_bytes=MAX_REQUEST_BYTES)).start()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def image_target(tmp_path_factory, fixture_saved_models, images):
    base = tmp_path_factory.mktemp("fuzz_image") / MODEL
    shutil.copytree(fixture_saved_models[0], base / "1")
    target = Target(start(base), {"instances": [{"image": b64(images["red_jpeg"])}]},
                    {"image": [images["red_jpeg"]]})
    yield target
    target.close()


@pytest.fixture(scope="module")
def numeric_target(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz_numeric") / MODEL
    write_numeric_model(str(base / "1"))
    target = Target(start(base), {"instances": [{"weights": [1.5, 2], "ids": 3}]},
                    {"weights": np.array([[1.5, 2]], np.float32), "ids": np.array([3], np.int64)})
    yield target
    target.close()


@pytest.fixture(scope="module")
def targets(image_target, numeric_target):
    return {"image": image_target, "numeric": numeric_target}


def post(target: Target, body: bytes):
    """(status, parsed JSON answer) of a :predict POST; the answer must be JSON."""
    request = urllib.request.Request(f"http://127.0.0.1:{target.server.rest_port}/v1/models/{MODEL}:predict",
                                     data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def rest_rows(doc: dict, answer: dict) -> tuple[set, set]:
    """Rows sent (per input) and rows answered (per output) of a :predict that succeeded."""
    if "instances" in doc:
        sent = {len(doc["instances"])}
    else:
        inputs = doc["inputs"]
        values = inputs.values() if isinstance(inputs, dict) and "b64" not in inputs else [inputs]
        sent = {len(v) if isinstance(v, list) else None for v in values}
    outputs = answer.get("predictions", answer.get("outputs"))
    answered = {len(v) for v in outputs.values()} if isinstance(outputs, dict) else {len(outputs)}
    return sent, answered


def assert_rest_client_error_or_ok(target: Target, body: bytes) -> None:
    status, answer = post(target, body)
    assert 200 <= status < 500, (status, answer, body[:200])
    if status == 200:  # then it was a request: one answer row per row sent, at least one
        sent, answered = rest_rows(json.loads(body), answer)
        assert len(sent) == 1 and sent == answered and 0 not in sent, (sent, answered, body[:200])
    else:
        assert set(answer) == {"error"} and answer["error"].strip(), (status, answer)
        assert len(answer["error"]) <= 1200, (status, len(answer["error"]))  # names, not echoes
    target.assert_still_serving()


def assert_grpc_client_error_or_ok(target: Target, call, request) -> None:
    try:
        response = call(request, 60)
    except grpc.RpcError as e:
        assert e.code() in CLIENT_CODES, (e.code(), e.details())
        assert e.details() and len(e.details()) <= 1200, (e.code(), e.details())
    else:
        if isinstance(request, predict_pb2.PredictRequest):  # one answer row per row sent
            sent = {p.tensor_shape.dim[0].size if p.tensor_shape.dim else None for p in request.inputs.values()}
            answered = {tf.make_ndarray(v).shape[0] for v in response.outputs.values()}
            assert len(sent) == 1 and sent == answered and 0 not in sent, (sent, answered, request)
    target.assert_still_serving()


# -- REST bodies ------------------------------------------------------------------------------
GOOD_JPEG = base64.b64decode(  # 1x1 JPEG
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHR8eHR0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0"
    "Hyc5PTgyPC4zNDL/wAALCAABAAEBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAACf/EABQQAQAAAAAAAAAAAAAAAAAAAAD/2gAIAQEAAD8A"
    "KgD/2Q==")
image_bytes = st.one_of(
    st.just(GOOD_JPEG),
    st.builds(lambda n: GOOD_JPEG[:n], st.integers(0, len(GOOD_JPEG))),
    st.builds(lambda head, tail: head + tail,
              st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM"]), st.binary(max_size=40)),
    st.binary(max_size=40))
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                   st.sampled_from(["\ud800", "a\udfff"]), st.builds(b64, image_bytes),
                   st.builds(lambda t: {"b64": t}, st.text(max_size=12)))
names = st.one_of(st.sampled_from(INPUTS + ["b64", "instances", "inputs", "signature_name"]),
                  st.text(max_size=6))
json_values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(names, inner, max_size=3)),
                           max_leaves=10)
numbers = st.one_of(st.integers(), st.floats(), st.sampled_from([2**63, 2**64, -2**63 - 1, 10**400]))
columns = st.dictionaries(names, st.one_of(json_values, st.lists(numbers | leaves, max_size=3),
                                           st.lists(st.lists(numbers, max_size=3), max_size=3)),
                          max_size=4)
request_docs = st.fixed_dictionaries({}, optional={
    "signature_name": st.one_of(st.sampled_from(SIGNATURES), json_values),
    "instances": st.one_of(st.lists(st.one_of(columns, leaves, st.lists(numbers, max_size=3)), max_size=3),
                           json_values),
    "inputs": st.one_of(columns, json_values)})


def dumps(doc) -> bytes:
    return json.dumps(doc).encode()  # NaN/Infinity as Python writes them; lone surrogates escaped


@st.composite
def deep_bodies(draw):
    depth = draw(st.one_of(st.integers(1, 40), st.sampled_from([999, 1000, 5000, 100_000, 200_000])))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"image":', b"}]"),
                                           (b'{"b64":', b"}")]))
    inner = opener * depth + draw(st.sampled_from([b'"x"', b"1", b"null", b""])) + closer * depth
    where = draw(st.sampled_from([b"%s", b'{"instances": %s}', b'{"inputs": %s}', b'{"inputs": {"image": %s}}',
                                  b'{"instances": [{"image": %s}]}', b'{"signature_name": %s, "instances": [1]}']))
    body = where % inner
    return body[:draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


@st.composite
def mutated_bodies(draw):
    body = dumps(draw(request_docs))
    at = draw(st.integers(0, len(body)))
    how = draw(st.sampled_from(["truncate", "insert", "utf-16", "utf-32", "bom"]))
    if how == "truncate":
        return body[:at]
    if how == "insert":
        return body[:at] + draw(st.binary(min_size=1, max_size=6)) + body[at:]
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    return body.decode().encode(how)


@st.composite
def huge_bodies(draw):
    text = "x" * draw(st.sampled_from([10_000, 300_000, 2 * MAX_REQUEST_BYTES]))
    digits = "9" * draw(st.sampled_from([20, 400, 4300, 4301, 10_000]))  # over 4300: Python's int limit
    template = draw(st.sampled_from([
        {"signature_name": text, "instances": [1]}, {"instances": [{text: "x"}]}, {"inputs": {text: ["x"]}},
        {"instances": [text]}, {"inputs": [{"b64": text}]}, {"instances": ["DIGITS"]},
        {"inputs": {"weights": [["DIGITS", 1]], "ids": [1]}}, {"inputs": {"weights": [[1, 2]], "ids": ["DIGITS"]}}]))
    return dumps(template).replace(b'"DIGITS"', digits.encode())


EMPTY_BATCHES = [b'{"instances": []}', b'{"inputs": []}', b'{"inputs": {"image": []}}', b'{"instances": [[]]}',
                 b'{"signature_name": "serving_image_text", "inputs": {"image": [], "title": [], "tags": []}}',
                 b'{"inputs": {"weights": [], "ids": []}}', b'{"inputs": {"weights": [[]], "ids": []}}']
rest_bodies = st.one_of(
    deep_bodies(), mutated_bodies(), huge_bodies(), st.builds(dumps, request_docs),
    st.builds(dumps, leaves), st.builds(dumps, json_values), st.binary(max_size=64),
    st.sampled_from(EMPTY_BATCHES + [b"", b" ", b"null", b"1", b'"x"', b"[]", b"{}", b"NaN", b"-"]))


@FUZZ
@given(target=st.sampled_from(["image", "numeric"]), body=rest_bodies)
def test_rest_fuzzed_bodies(targets, target, body):
    assert_rest_client_error_or_ok(targets[target], body)


# -- gRPC requests ----------------------------------------------------------------------------
DTYPES = list(types_pb2.DataType.values())
NUMPY_DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint64, np.bool_, np.complex64]
dims = st.one_of(st.integers(-2, 4), st.sampled_from([10**12, 2**62]))


@st.composite
def arrays(draw, shape: list[int], strings: bool):
    """An array of `shape`: bytes (images, damaged images, noise) or numbers of any dtype."""
    count = int(np.prod(shape))
    if strings:
        array = np.empty(count, dtype=object)
        array[:] = draw(st.lists(image_bytes, min_size=count, max_size=count))
        return array.reshape(shape)
    dtype = draw(st.sampled_from(NUMPY_DTYPES))
    values = draw(st.lists(st.booleans() if dtype == np.bool_ else st.floats(width=16), min_size=count,
                           max_size=count))
    with np.errstate(all="ignore"):
        return np.array(values).astype(dtype).reshape(shape)


@st.composite
def tensor_protos(draw):
    if draw(st.booleans()):  # well-formed, of any dtype and shape (empty batches, wrong rank)
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        return tf.make_tensor_proto(draw(arrays(shape, draw(st.booleans()))))
    proto = tensor_pb2.TensorProto(dtype=draw(st.one_of(st.sampled_from(DTYPES), st.integers(-1, 400))))
    for size in draw(st.lists(dims, max_size=4)):
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = draw(st.booleans())
    field = draw(st.sampled_from(["tensor_content", "string_val", "float_val", "int_val", "int64_val",
                                  "bool_val", "half_val", "dcomplex_val", "uint64_val", "none"]))
    if field == "tensor_content":
        proto.tensor_content = draw(st.binary(max_size=48))
    elif field == "string_val":
        proto.string_val.extend(draw(st.lists(image_bytes, max_size=3)))
    elif field in ("float_val", "dcomplex_val"):
        getattr(proto, field).extend(draw(st.lists(st.floats(width=32), max_size=4)))
    elif field == "bool_val":
        proto.bool_val.extend(draw(st.lists(st.booleans(), max_size=4)))
    elif field != "none":
        bits = {"int_val": 31, "int64_val": 63, "half_val": 31, "uint64_val": 64}[field]
        low = 0 if field == "uint64_val" else -2**bits
        getattr(proto, field).extend(draw(st.lists(st.integers(low, 2**bits - 1), max_size=4)))
    return proto


@st.composite
def predict_requests(draw):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = draw(st.one_of(st.just(MODEL), st.text(max_size=8)))
    request.model_spec.signature_name = draw(st.one_of(st.sampled_from(SIGNATURES), st.text(max_size=8)))
    if draw(st.booleans()):
        request.model_spec.version.value = draw(st.one_of(st.just(1), st.integers(-2**63, 2**63 - 1)))
    elif draw(st.booleans()):
        request.model_spec.version_label = draw(st.text(max_size=6))
    signature_inputs = st.sampled_from([("image",), ("image", "title", "tags"), ("weights", "ids"), ("examples",)])
    for name in draw(st.one_of(signature_inputs, st.lists(st.one_of(st.sampled_from(INPUTS), st.text(max_size=6)),
                                                          max_size=4, unique=True))):
        request.inputs[name].CopyFrom(draw(tensor_protos()))
    request.output_filter.extend(draw(st.lists(st.sampled_from(["scores", "classes", "total", "x"]), max_size=2)))
    return request


SIGNATURE_INPUTS = {"image": [("", ["image"]), ("serving_image_text", ["image", "title", "tags"]),
                               ("serving_examples", ["examples"])],
                    "numeric": [("serving_default", ["weights", "ids"])]}
ROW_SHAPES = {"weights": [2]}  # the others are one value per row


@st.composite
def near_valid_requests(draw):
    """(target, request) with the target's model, a signature and its inputs: batches of 0-3
    rows, now and then another batch size, rank or dtype for one input."""
    target = draw(st.sampled_from(["image", "numeric"]))
    signature, names = draw(st.sampled_from(SIGNATURE_INPUTS[target]))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    rows = draw(st.integers(0, 3))
    for name in names:
        shape = [draw(st.one_of(st.just(rows), st.integers(0, 3)))] + ROW_SHAPES.get(name, [])
        shape = draw(st.sampled_from([shape, shape, shape[1:], shape + [1]]))
        strings = (name not in ROW_SHAPES and name != "ids") != (draw(st.integers(0, 5)) == 0)
        request.inputs[name].CopyFrom(tf.make_tensor_proto(draw(arrays(shape, strings))))
    return target, request


@FUZZ
@given(case=st.one_of(near_valid_requests(), st.tuples(st.sampled_from(["image", "numeric"]), predict_requests())))
def test_grpc_fuzzed_requests(targets, case):
    target = targets[case[0]]
    assert_grpc_client_error_or_ok(target, target.stub.Predict, case[1])


@st.composite
def raw_request_bytes(draw):
    """Bytes that are, or are close to, a serialized PredictRequest."""
    body = draw(predict_requests()).SerializeToString()
    at = draw(st.integers(0, len(body)))
    how = draw(st.sampled_from(["random", "truncate", "insert", "bad_utf8_name"]))
    if how == "random":
        return draw(st.binary(max_size=64))
    if how == "truncate":
        return body[:at]
    if how == "insert":
        return body[:at] + draw(st.binary(min_size=1, max_size=6)) + body[at:]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "\x01" * 3  # same length as the bytes put in its place
    return request.SerializeToString().replace(b"\x01" * 3, draw(st.sampled_from([b"\xff\xfe\xfd", b"\xed\xa0\x80"])))


@settings(FUZZ, max_examples=60)
@given(target=st.sampled_from(["image", "numeric"]), body=raw_request_bytes())
def test_grpc_bytes_that_are_not_a_request(targets, target, body):
    target = targets[target]
    assert_grpc_client_error_or_ok(target, target.raw_predict, body)


# -- named bodies: the table of docs/reliability.md ------------------------------------------
def nest(depth: int, inner: bytes = b'"x"') -> bytes:
    return b"[" * depth + inner + b"]" * depth


REST_CASES = [
    # (id, target, body, HTTP status, words the error must contain)
    ("deep_array_100k_open", "image", b"[" * 100_000, 400, "nested 100000 deep"),
    ("deep_array_100k_closed", "image", b'{"instances": %s}' % nest(100_000), 400, "nested 100001 deep"),
    ("deep_object_100k", "image", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "nested 100000 deep"),
    ("deep_array_40_columnar", "image", b'{"inputs": %s}' % nest(40), 400, "nested 41 deep"),
    ("deep_array_5_numeric", "numeric", b'{"inputs": {"weights": %s, "ids": [1]}}' % nest(5, b"1"), 400,
     "nested 7 deep"),
    ("rank_too_high_columnar", "image", b'{"inputs": [["x"]]}', 400, "has shape [1, 1]"),
    ("truncated", "image", b'{"instances": [{"image": {"b64": "AAA', 400, "JSON Parse error"),
    ("not_utf8", "image", b'{"instances": [{"image": "\xff\xfe"}]}', 400, "not UTF-8"),
    ("utf16_body", "image", '{"instances": ["x"]}'.encode("utf-16"), 400, "not UTF-8"),
    ("encoded_surrogate", "image", b'{"inputs": ["\xed\xa0\x80"]}', 400, "not UTF-8"),
    ("escaped_lone_surrogate", "image", b'{"inputs": ["\\ud800"]}', 400, "not valid Unicode"),
    ("bare_number", "image", b"5", 400, "Is not object"),
    ("bare_null", "image", b"null", 400, "Is not object"),
    ("bare_string", "image", b'"x"', 400, "Is not object"),
    ("huge_signature_name", "image", dumps({"signature_name": "s" * 500_000, "instances": [1]}), 400,
     "not found in signature def"),
    ("huge_input_name", "image", dumps({"instances": [{"i" * 500_000: "x"}]}), 400, "does not have named input"),
    ("huge_string_value", "image", dumps({"instances": ["x" * 900_000]}), 400, "image"),
    ("over_request_limit", "image", dumps({"instances": ["x" * (MAX_REQUEST_BYTES + 1)]}), 413,
     "exceeds the limit"),
    ("integer_of_5000_digits", "image", b'{"instances": [%s]}' % (b"9" * 5000), 400, "digits"),
    ("int_over_int64", "numeric", dumps({"inputs": {"weights": [[1, 2]], "ids": [2**64]}}), 400,
     "out of range for int64"),
    ("int_over_float32", "numeric", dumps({"inputs": {"weights": [[10**400, 2]], "ids": [1]}}), 400,
     "out of range for float32"),
    ("empty_instances", "image", b'{"instances": []}', 400, "No values in 'instances'"),
    ("empty_columnar_batch", "image", b'{"inputs": {"image": []}}', 400, "empty batch"),
    ("mismatched_batch", "numeric", dumps({"inputs": {"weights": [[1, 2]], "ids": [1, 2]}}), 400,
     "same batch size"),
    ("ragged_rows", "numeric", dumps({"inputs": {"weights": [[1, 2], [3]], "ids": [1, 2]}}), 400,
     "unexpected size"),
    ("bool_for_float", "numeric", dumps({"instances": [{"weights": [True, 2], "ids": 1}]}), 400,
     "is not of expected type: float"),
    ("unknown_signature", "image", dumps({"signature_name": "nope", "instances": ["x"]}), 400,
     'signature name: "nope" not found'),
    ("examples_not_a_tf_example", "image", dumps({"signature_name": "serving_examples",
                                                  "instances": [b64(b"\xff\xd8\xff\x00abc")]}), 400,
     "Could not parse example input"),
    ("unknown_input", "numeric", dumps({"inputs": {"weights": [[1, 2]], "ids": [1], "x": [1]}}), 400,
     "Unknown named input(s): x"),
]


@pytest.mark.parametrize("target,body,status,words", [c[1:] for c in REST_CASES], ids=[c[0] for c in REST_CASES])
def test_named_rest_bodies(targets, target, body, status, words):
    got, doc = post(targets[target], body)
    assert (got, set(doc)) == (status, {"error"}), (got, doc)
    assert words in doc["error"] and len(doc["error"]) <= 1200, doc["error"][:300]
    targets[target].assert_still_serving()


def tensor(dtype, dims, **values) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    return proto


def grpc_case(signature: str = "", **inputs) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto)
                                      else tf.make_tensor_proto(value))
    return request


def bad_utf8_name() -> bytes:
    request = grpc_case(image=[GOOD_JPEG])
    request.model_spec.name = "\x01" * 5
    return request.SerializeToString().replace(b"\x01" * 5, b"sic\xfft")


def huge_model_name() -> predict_pb2.PredictRequest:
    request = grpc_case(image=[GOOD_JPEG])
    request.model_spec.name = "m" * 500_000
    return request


INVALID = grpc.StatusCode.INVALID_ARGUMENT
GRPC_CASES = [
    # (id, target, request (bytes: sent as they are), status, words the message must contain)
    ("not_a_protobuf", "image", b"\xff\xff\xff\xff", INVALID, "not a valid tensorflow.serving.PredictRequest"),
    ("truncated_protobuf", "image", grpc_case(image=[GOOD_JPEG]).SerializeToString()[:-3], INVALID,
     "not a valid tensorflow.serving.PredictRequest"),
    ("invalid_utf8_model_name", "image", bad_utf8_name(), INVALID, "not a valid tensorflow.serving.PredictRequest"),
    ("dtype_invalid", "image", grpc_case(image=tensor(types_pb2.DT_INVALID, [1])), INVALID,
     "not a valid TensorProto"),
    ("dtype_unknown_number", "image", grpc_case(image=tensor(999, [1])), INVALID, "not a valid TensorProto"),
    ("dtype_variant", "image", grpc_case(image=tensor(types_pb2.DT_VARIANT, [1])), INVALID,
     "not a valid TensorProto"),
    ("complex_for_float", "numeric", grpc_case(weights=np.array([[1 + 1j, 2]], np.complex64),
                                               ids=np.array([1])), INVALID, "do not convert without loss"),
    ("float_for_string", "image", grpc_case(image=[1.5, 2.5]), INVALID, "expects string"),
    ("string_for_int", "numeric", grpc_case(weights=np.array([[1, 2]], np.float32), ids=[b"1"]),
     INVALID, "got strings"),
    ("content_shorter_than_shape", "numeric",
     grpc_case(weights=tensor(types_pb2.DT_FLOAT, [1, 2], tensor_content=b"\0" * 6),
               ids=np.array([1])), INVALID, "not a valid TensorProto"),
    ("negative_dim", "image", grpc_case(image=tensor(types_pb2.DT_STRING, [-1], string_val=[b"x"])),
     INVALID, "negative"),
    ("shape_of_10^12_values", "image",
     grpc_case(image=tensor(types_pb2.DT_STRING, [10**12], string_val=[b"x"])),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "1000000000000 values"),
    ("scalar_for_batch", "image", grpc_case(image=GOOD_JPEG), INVALID, "has shape []"),
    ("rank_too_high", "image", grpc_case(image=[[GOOD_JPEG]]), INVALID, "has shape [1, 1]"),
    ("empty_batch", "image", grpc_case(image=tensor(types_pb2.DT_STRING, [0])), INVALID, "empty batch"),
    ("mismatched_batch", "image", grpc_case("serving_image_text", image=[GOOD_JPEG, GOOD_JPEG],
                                            title=[b"a"], tags=[b"b"]), INVALID, "same batch size"),
    ("wrong_inner_dim", "numeric", grpc_case(weights=np.ones((1, 3), np.float32), ids=np.array([1])),
     INVALID, "expected [-1, 2]"),
    ("not_an_image", "image", grpc_case(image=[b"\xff\xd8\xff" + b"\0" * 20]), INVALID, "JPEG"),
    ("examples_not_a_tf_example", "image", grpc_case("serving_examples", examples=[b"\xff\xd8\xff\x00abc"]),
     INVALID, "Could not parse example input"),
    ("unknown_signature", "image", grpc_case("nope", image=[GOOD_JPEG]), INVALID,
     'signature name: "nope" not found'),
    ("unknown_input", "image", grpc_case(image=[GOOD_JPEG], colour=[b"red"]), INVALID,
     "Sent extra: {colour}"),
    ("huge_signature_name", "image", grpc_case("s" * 500_000, image=[GOOD_JPEG]), INVALID,
     "not found in signature def"),
    ("huge_model_name", "image", huge_model_name(), grpc.StatusCode.NOT_FOUND, "this server serves model 'sicot'"),
]


@pytest.mark.parametrize("target,request_,code,words", [c[1:] for c in GRPC_CASES], ids=[c[0] for c in GRPC_CASES])
def test_named_grpc_requests(targets, target, request_, code, words):
    target = targets[target]
    call = target.raw_predict if isinstance(request_, bytes) else target.stub.Predict
    with pytest.raises(grpc.RpcError) as info:
        call(request_, 60)
    assert (info.value.code(), words in info.value.details()) == (code, True), info.value.details()
    target.assert_still_serving()


def test_grpc_method_table_matches_the_services():
    from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

    from sicot.serving.grpc_api import _METHODS

    for services in (prediction_service_pb2.DESCRIPTOR, model_service_pb2.DESCRIPTOR):
        for service in services.services_by_name.values():
            assert {name: (request.DESCRIPTOR.full_name, response.DESCRIPTOR.full_name)
                    for name, (request, response) in _METHODS[service.full_name].items()} == \
                {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods}
