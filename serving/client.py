"""A client for SICoT served with the TensorFlow Serving protocol (this server or the real one).

gRPC uses the official stubs of tensorflow-serving-api; REST posts TF Serving's JSON. The
signature's inputs are read from the model metadata first, so the same call fills `image`,
`title`, `tags` (serving_default, serving_image_text) or builds a serialized tf.Example
(serving_examples).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import urllib.request

import numpy as np

from sicot import contract

_IMAGE_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF",
                b"GIF89a": "GIF", b"BM": "BMP"}


class ClientError(Exception):
    """The server could not be reached or answered an error; `code` is the canonical status name."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass
class Prediction:
    version: int | None  # None over REST (TF Serving's REST reply does not carry it)
    signature_name: str
    outputs: dict[str, np.ndarray]

    def top_k(self, row: int = 0) -> list[tuple[str, float, int | None]]:
        """[(class name, score, class id)] of one row, best first."""
        classes = self.outputs[contract.CLASSES_OUTPUT][row]
        scores = self.outputs[contract.SCORES_OUTPUT][row]
        ids = self.outputs.get(contract.CLASS_IDS_OUTPUT)
        return [(c.decode("utf-8") if isinstance(c, bytes) else str(c), float(s),
                 None if ids is None else int(ids[row][i]))
                for i, (c, s) in enumerate(zip(classes, scores))]


def image_format(data: bytes) -> str | None:
    """'JPEG' | 'PNG' | 'GIF' | 'BMP' from the magic bytes, None for anything else."""
    return next((fmt for magic, fmt in _IMAGE_MAGIC.items() if data.startswith(magic)), None)


def parse_server(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--server {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8500")
    return host.strip("[]"), int(port)


def default_signature(title: str | None, tags: str | None) -> str:
    return contract.IMAGE_TEXT_SIGNATURE if (title or tags) else contract.IMAGE_SIGNATURE


def build_inputs(input_names, image: bytes, title: str | None, tags: str | None) -> dict[str, np.ndarray]:
    """Values for a signature's inputs, one row; raises ValueError for an input we cannot fill."""
    import tensorflow as tf

    raw = {contract.IMAGE_KEY: image, contract.TITLE_KEY: (title or "").encode("utf-8"),
           contract.TAGS_KEY: (tags or "").encode("utf-8")}
    names = set(input_names)
    if (title or tags) and not names & {contract.TITLE_KEY, contract.TAGS_KEY,
                                     contract.EXAMPLES_INPUT}:
        raise ValueError(f"this signature takes only {sorted(names)}: --title/--tags would be "
                         f"ignored; use --signature {contract.IMAGE_TEXT_SIGNATURE}")
    inputs = {}
    for name in names:
        if name in raw:
            value = raw[name]
        elif name == contract.EXAMPLES_INPUT:
            value = tf.train.Example(features=tf.train.Features(feature={
                k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v])) for k, v in raw.items()
            })).SerializeToString()
        else:
            raise ValueError(f"the signature needs input {name!r}, which --image/--title/--tags "
                             "cannot provide")
        inputs[name] = np.array([value], dtype=object)
    return inputs


# -- gRPC -------------------------------------------------------------------------------------
def predict_request(model_name: str, signature_name: str, inputs: dict,
                    version: int | None = None):
    """A TF Serving `PredictRequest` for `inputs` ({input name: array-like}), latest version
    unless `version` is given."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


class GrpcClient:
    def __init__(self, server: str, model_name: str, timeout: float = 30.0):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.model_name = model_name
        self.timeout = timeout
        self.channel = grpc.insecure_channel(server)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ClientError(e.code().name, e.details() or str(e)) from None

    def signature_defs(self):
        """The model's `SignatureDefMap` (GetModelMetadata)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = self.model_name
        request.metadata_field.append("signature_def")
        response = self._call(self.predictions.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return signature_map

    def input_names(self, signature_name: str) -> list[str]:
        signature_map = self.signature_defs()
        if signature_name not in signature_map.signature_def:
            raise ClientError("INVALID_ARGUMENT", f"model {self.model_name} has no signature "
                              f"{signature_name!r}; it has {sorted(signature_map.signature_def)}")
        return list(signature_map.signature_def[signature_name].inputs)

    def model_status(self) -> list[tuple[int, str, str]]:
        """[(version, state name, error message)] of every version (ModelService.GetModelStatus)."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        response = self._call(self.models.GetModelStatus, request)
        return [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                 s.status.error_message) for s in response.model_version_status]

    def predict(self, signature_name: str, inputs: dict[str, np.ndarray],
                version: int | None = None) -> Prediction:
        import tensorflow as tf

        request = predict_request(self.model_name, signature_name, inputs, version)
        response = self._call(self.predictions.Predict, request)
        return Prediction(response.model_spec.version.value, response.model_spec.signature_name,
                          {k: tf.make_ndarray(v) for k, v in response.outputs.items()})

    def close(self):
        self.channel.close()


# -- REST -------------------------------------------------------------------------------------
class RestClient:
    def __init__(self, server: str, model_name: str, timeout: float = 30.0):
        self.base = f"http://{server}/v1/models/{model_name}"
        self.model_name = model_name
        self.timeout = timeout

    def _request(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text
            raise ClientError(f"HTTP {e.code}", message) from None
        except urllib.error.URLError as e:
            raise ClientError("UNAVAILABLE", f"cannot reach {url}: {e.reason}") from None

    def input_names(self, signature_name: str) -> list[str]:
        doc = self._request(f"{self.base}/metadata")
        signatures = doc["metadata"]["signature_def"]["signature_def"]
        if signature_name not in signatures:
            raise ClientError("INVALID_ARGUMENT", f"model {self.model_name} has no signature "
                              f"{signature_name!r}; it has {sorted(signatures)}")
        return list(signatures[signature_name].get("inputs", {}))

    def predict(self, signature_name: str, inputs: dict[str, np.ndarray],
                version: int | None = None) -> Prediction:
        rows = len(next(iter(inputs.values())))
        instances = [{k: _json_value(v[i]) for k, v in inputs.items()} for i in range(rows)]
        url = self.base + (f"/versions/{version}" if version is not None else "") + ":predict"
        doc = self._request(url, {"signature_name": signature_name, "instances": instances})
        predictions = doc["predictions"]
        if not isinstance(predictions[0], dict):
            raise ClientError("INVALID_ARGUMENT", "the signature has a single output; expected "
                              "classes and scores")
        outputs = {k: np.array([p[k] for p in predictions], dtype=object if k == contract.CLASSES_OUTPUT else None)
                   for k in predictions[0]}
        return Prediction(None, signature_name, outputs)

    def close(self):
        pass


def _json_value(value):
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value.tolist() if isinstance(value, np.ndarray) else value
