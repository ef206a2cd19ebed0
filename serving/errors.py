"""Status codes of the TensorFlow Serving protocol and their HTTP mapping.

Every failure inside the server is a `ServingError(code, message)`; the gRPC front end aborts with
`code` and the REST front end answers `{"error": message}` with the HTTP status TF Serving uses
for that code (tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode).
"""
from __future__ import annotations

import re

import grpc

_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status TF Serving's REST front end answers for a canonical status code."""
    return _HTTP_STATUS.get(code, 500)


# A message names the problem; it does not echo a 500 KB name back (gRPC would drop a status
# message over its 16 KB metadata limit and the client would see only "Stream removed").
MAX_MESSAGE_CHARS = 1000


def _clip(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    head, tail = MAX_MESSAGE_CHARS * 6 // 10, MAX_MESSAGE_CHARS * 3 // 10
    return f"{message[:head]}...[{len(message) - head - tail} characters cut]...{message[-tail:]}"


class ServingError(Exception):
    """A request failed with a canonical status code and a message for the caller (at most
    about MAX_MESSAGE_CHARS characters: the middle of a longer one is cut)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        message = _clip(message)
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return http_status(self.code)

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def from_tensorflow_error(error: Exception) -> ServingError:
    """Maps an exception raised while running a signature to the status TF Serving reports.

    TensorFlow op errors carry a canonical code (a bad JPEG is INVALID_ARGUMENT, exactly as in
    TF Serving, which propagates the op's status); anything else is INTERNAL.
    """
    import tensorflow as tf

    if isinstance(error, ServingError):
        return error
    if isinstance(error, tf.errors.OpError):
        code = _code_from_number(error.error_code)  # TF codes are the canonical gRPC numbers
        return ServingError(code, op_error_message(error.message))
    if isinstance(error, UnicodeDecodeError) and isinstance(error.object, bytes):
        # TF raises this instead of the OpError when the op's message is not UTF-8: the op quoted
        # the client's bytes back ("Could not parse example input, value: '\xff..."), so it
        # refused the input. The code is lost with the OpError; the input was the problem.
        message = re.sub(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\]$", "",
                         error.object.decode("utf-8", "replace").strip())
        return ServingError(grpc.StatusCode.INVALID_ARGUMENT, op_error_message(message))
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


def _code_from_number(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def op_error_message(message: str) -> str:
    """The op's own words from a TF error ("Unknown image file format..."), without the graph
    execution preamble, node names and stack traces that mean nothing to a client."""
    noise = ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ")
    lines = [line.strip() for line in message.split("\n")]
    kept = [line for line in lines if line and not line.startswith(noise)]
    return kept[-1] if kept else message.strip()
