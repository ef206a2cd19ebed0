"""gRPC front end: `tensorflow.serving.PredictionService` and `tensorflow.serving.ModelService`.

Built on the official servicer base classes and protos of tensorflow-serving-api, so any TF
Serving client (its Python stubs, or any language's) talks to this server unchanged.
Classify, Regress and MultiInference answer UNIMPLEMENTED: TF2 Keras exports only have predict
signatures (tensorflow/serving issue 1512). Request bytes that do not parse as the method's proto
(garbage, truncation, invalid UTF-8 in a string field) answer INVALID_ARGUMENT; grpcio's own
handlers would answer INTERNAL ("Exception deserializing request!").
"""
from __future__ import annotations

import functools
import math
import time

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from sicot import contract
from sicot.serving.errors import ServingError, invalid_argument

_PREDICT_ONLY = ("{method} is not implemented by this server: TF2/Keras SavedModels have predict "
                 "signatures only (no classification/regression SignatureDefs); use Predict "
                 f"with signature '{contract.IMAGE_SIGNATURE}' or "
                 f"'{contract.IMAGE_TEXT_SIGNATURE}'.")


class _Unparsed:
    """Request bytes that did not parse: the method answers INVALID_ARGUMENT with `message`."""

    def __init__(self, message: str):
        self.message = message


def _parse(request_type):
    def parse(data: bytes):
        try:
            return request_type.FromString(data)
        except Exception as e:  # DecodeError; grpcio would answer INTERNAL
            return _Unparsed(f"The request is not a valid {request_type.DESCRIPTOR.full_name} "
                             f"protocol buffer ({type(e).__name__}: {e})")

    return parse


def _instrumented(method_name: str):
    """Times the call, counts it by status, and turns ServingError into a gRPC status."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(self, request, context):
            started = time.perf_counter()
            status = "OK"
            try:
                if isinstance(request, _Unparsed):
                    raise invalid_argument(request.message)
                return fn(self, request, context)
            except ServingError as e:
                status = e.code.name
                context.abort(e.code, e.message)
            except Exception as e:  # a bug must still answer, and say what happened
                status = "INTERNAL"
                context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
            finally:
                self.server.metrics.observe_request("grpc", method_name, status,
                                                    time.perf_counter() - started)

        return call

    return wrap


def _version(model_spec) -> int | None:
    if model_spec.HasField("version"):
        return model_spec.version.value
    if model_spec.version_label:
        raise invalid_argument(f"Unrecognized servable version label: {model_spec.version_label} "
                               "(this server has no version labels configured)")
    return None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server):
        self.server = server

    @_instrumented("Predict")
    def Predict(self, request, context):
        import tensorflow as tf

        spec = request.model_spec
        with self.server.request() as tracked:  # the signature runs on this (grpcio's) thread
            inputs = {name: self._array(name, proto) for name, proto in request.inputs.items()}
            version, signature, outputs = self.server.predict(
                spec.name, _version(spec), spec.signature_name, inputs, list(request.output_filter),
                tracked)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = signature
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(array))
        return response

    def _array(self, name: str, proto):
        import tensorflow as tf

        # make_ndarray repeats the last value up to the shape: [10**12] with one value would
        # allocate 8 TB. A request may expand to as many values as it may have bytes.
        shape = [d.size for d in proto.tensor_shape.dim]
        if any(size < 0 for size in shape):
            raise invalid_argument(f"Input '{name}' has shape {shape}: a tensor's sizes cannot be negative")
        values, limit = math.prod(shape), self.server.options.max_request_bytes
        if values > limit:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"Input '{name}' has shape {shape} = {values} values, more than the {limit} "
                               "a request may expand to (--max-request-bytes)")
        try:
            return tf.make_ndarray(proto)
        except Exception as e:
            raise invalid_argument(f"Input '{name}' is not a valid TensorProto: {type(e).__name__}: {e}")

    @_instrumented("GetModelMetadata")
    def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if not fields:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = [f for f in fields if f != "signature_def"]
        if unsupported:
            raise invalid_argument(f"Metadata field {unsupported[0]} is not supported")
        version, signature_defs = self.server.metadata(request.model_spec.name,
                                                       _version(request.model_spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signature_defs)
        return response

    @_instrumented("Classify")
    def Classify(self, request, context):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, _PREDICT_ONLY.format(method="Classify"))

    @_instrumented("Regress")
    def Regress(self, request, context):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, _PREDICT_ONLY.format(method="Regress"))

    @_instrumented("MultiInference")
    def MultiInference(self, request, context):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, _PREDICT_ONLY.format(method="MultiInference"))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server):
        self.server = server

    @_instrumented("GetModelStatus")
    def GetModelStatus(self, request, context):
        return self.server.status_proto(request.model_spec.name, _version(request.model_spec))

    @_instrumented("HandleReloadConfigRequest")
    def HandleReloadConfigRequest(self, request, context):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                           "HandleReloadConfigRequest is not supported: this server serves one model "
                           "from --model-base-path and finds new versions by polling")


# The methods of the two services (as in the generated *_pb2_grpc.add_*_to_server), with
# request parsing that never raises.
_METHODS = {
    "tensorflow.serving.PredictionService": {
        "Classify": (classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse),
        "Regress": (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
        "Predict": (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
        "MultiInference": (inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse),
        "GetModelMetadata": (get_model_metadata_pb2.GetModelMetadataRequest,
                             get_model_metadata_pb2.GetModelMetadataResponse),
    },
    "tensorflow.serving.ModelService": {
        "GetModelStatus": (get_model_status_pb2.GetModelStatusRequest, get_model_status_pb2.GetModelStatusResponse),
        "HandleReloadConfigRequest": (model_management_pb2.ReloadConfigRequest,
                                      model_management_pb2.ReloadConfigResponse),
    },
}


def add_services(grpc_server: grpc.Server, server) -> None:
    servicers = {"tensorflow.serving.PredictionService": PredictionServicer(server),
                 "tensorflow.serving.ModelService": ModelServicer(server)}
    for service, methods in _METHODS.items():
        handlers = {name: grpc.unary_unary_rpc_method_handler(
            getattr(servicers[service], name), request_deserializer=_parse(request_type),
            response_serializer=response_type.SerializeToString)
            for name, (request_type, response_type) in methods.items()}
        grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


__all__ = ["add_services", "get_model_status_pb2"]
