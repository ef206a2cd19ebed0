"""REST JSON <-> tensors, following TF Serving's util/json_tensor.cc."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from sicot.serving import tensor_json
from sicot.serving.errors import ServingError
from sicot.serving.servable import TensorSpecInfo

IMAGE = {"image": TensorSpecInfo("image", tf.string, (None,))}
MULTI = {"image": TensorSpecInfo("image", tf.string, (None,)),
         "weights": TensorSpecInfo("weights", tf.float32, (None, 2)),
         "ids": TensorSpecInfo("ids", tf.int64, (None,))}


def parse(doc, specs):
    return tensor_json.parse_predict_request(json.dumps(doc).encode(), lambda _: specs)


def test_row_format_stacks_instances_and_decodes_b64():
    sig, inputs, fmt = parse({"signature_name": "s", "instances": [
        {"image": {"b64": "aGVsbG8="}, "weights": [1, 2.5], "ids": 3},
        {"image": "plain text", "weights": [0.5, 0], "ids": -1}]}, MULTI)
    assert (sig, fmt) == ("s", tensor_json.ROW)
    assert inputs["image"].tolist() == [b"hello", b"plain text"]
    assert inputs["weights"].dtype == np.float32 and inputs["weights"].tolist() == [[1, 2.5], [0.5, 0]]
    assert inputs["ids"].dtype == np.int64 and inputs["ids"].tolist() == [3, -1]


def test_columnar_format_and_bare_values_for_a_single_input():
    _, inputs, fmt = parse({"inputs": [{"b64": "YQ"}, "b"]}, IMAGE)  # unpadded base64 accepted
    assert fmt == tensor_json.COLUMNAR and inputs["image"].tolist() == [b"a", b"b"]
    _, inputs, fmt = parse({"instances": [{"b64": "YQ=="}]}, IMAGE)
    assert fmt == tensor_json.ROW and inputs["image"].tolist() == [b"a"]


@pytest.mark.parametrize("doc,words", [
    ({"instances": [{"image": "a", "weights": [1, 2], "ids": 1.5}]}, "is not of expected type: int64"),
    ({"instances": [{"image": "a", "weights": [1, 2], "ids": True}]}, "is not of expected type: int64"),
    ({"instances": [{"image": "a", "weights": [1, 2], "ids": 1}, {"image": "a", "weights": [1], "ids": 1}]},
     "Expecting shape [2] but got: [1]"),
    ({"instances": ["a"]}, "instances is a plain list"),
    ({"instances": [{"image": {"b64": "YQ==", "x": 1}, "weights": [1, 2], "ids": 1}]}, "base64"),
    ({"inputs": {"image": ["a"], "weights": [[1, 2]]}}, "Missing named input: ids"),
    ({"inputs": {"image": [["a"], "b"], "weights": [[1, 2]], "ids": [1]}}, "incorrect level: list depth 1"),
    ({"inputs": {"image": ["a"]}, "instances": [1]}, "only one of 'inputs' or 'instances'"),
    ({"instances": []}, "No values in 'instances' array"),
    ({"signature_name": 3, "instances": [1]}, "'signature_name' key must be a string"),
])
def test_bad_documents_are_invalid_argument(doc, words):
    with pytest.raises(ServingError) as info:
        parse(doc, MULTI)
    assert info.value.http_status == 400 and words in info.value.message


def test_response_formats_like_tf_serving():
    outputs = {"scores": np.array([[0.2, 1.0], [1e-8, np.float32(1 / 3)]], np.float32),
               "classes": np.array([[b"mug", b"lamp"], [b"\xff\xfe", b"shoe"]], object),
               "thumbnail_bytes": np.array([b"\x00\x01", b"ok"], object)}
    rows = tensor_json.make_predict_response(outputs, tensor_json.ROW)
    text = tensor_json.dumps(rows).decode()
    assert "0.2," in text and "0.33333334" in text and "1.0" in text and "1e-08" in text  # shortest float32 text
    first, second = rows["predictions"]
    assert first["classes"] == ["mug", "lamp"]
    assert first["thumbnail_bytes"] == {"b64": "AAE="}  # *_bytes outputs are always base64
    assert second["classes"][0] == {"b64": "//4="}  # not UTF-8: base64 rather than invalid JSON
    assert np.array(second["scores"], np.float32)[1] == np.float32(1 / 3)  # round-trips exactly

    single = tensor_json.make_predict_response({"scores": outputs["scores"]}, tensor_json.ROW)
    assert single == {"predictions": [[0.2, 1.0], [1e-8, 0.33333334]]}  # one output: bare values
    columns = tensor_json.make_predict_response({"scores": outputs["scores"]}, tensor_json.COLUMNAR)
    assert columns == {"outputs": [[0.2, 1.0], [1e-8, 0.33333334]]}


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


tricky_text = st.text(alphabet='"\\[]{}a\u00e9 ', max_size=8)  # quotes, backslashes, brackets in strings
json_documents = st.recursive(st.one_of(st.none(), st.integers(), tricky_text),
                              lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(tricky_text, inner, max_size=3)),
                              max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_documents, st.booleans())
def test_json_nesting_is_the_depth_of_any_document(doc, ascii_only):
    body = json.dumps(doc, ensure_ascii=ascii_only).encode()
    assert tensor_json.json_nesting(body) == depth(doc)
    cut = body[:len(body) // 2]  # a truncated body never nests deeper than the whole
    assert tensor_json.json_nesting(cut) <= depth(doc)


def test_nesting_beyond_the_inputs_rank_is_refused_before_decoding():
    for body, rank, words in [(b"[" * 100_000, 1, "nested 100000 deep"),
                              (b'{"a":' * 50 + b"1" + b"}" * 50, 2, "nested 50 deep; a request to this model "
                                                                     "needs at most 5")]:
        with pytest.raises(ServingError) as info:
            tensor_json.parse_predict_request(body, lambda _: IMAGE, max_rank=rank)
        assert info.value.http_status == 400 and words in info.value.message
    # brackets inside a string (after an escaped quote) are not nesting
    _, inputs, _ = tensor_json.parse_predict_request(b'{"inputs": ["\\" ' + b"[" * 100 + b'"]}',
                                                     lambda _: IMAGE, max_rank=1)
    assert inputs["image"].tolist() == [b'" ' + b"[" * 100]
