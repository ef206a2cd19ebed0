"""JSON <-> tensors for the REST API, following TF Serving's util/json_tensor.cc.

Request (`:predict`):
  {"signature_name": "...",            optional, default serving_default
   "instances": [row, row, ...]}        row format: a row is {input: value} (or a bare value when
                                        the signature has one input); rows are stacked into a batch
  {"inputs": {input: value, ...}}       columnar format (or a bare value for one input)
Binary strings are {"b64": "<standard base64>"}; a plain JSON string is taken as UTF-8 bytes.

Response: row requests get {"predictions": [...]} (one entry per row: an object of outputs, or
the bare value when there is one output); columnar requests get {"outputs": ...}. String outputs
whose name ends in `_bytes` are written as {"b64": ...}; other strings as JSON strings (a value
that is not UTF-8 is written as {"b64": ...} too, where TF Serving would emit invalid JSON).
Floats are written with the shortest text that round-trips their float32/float64 value.

Two deliberate strictnesses beyond TF Serving: unknown keys in a columnar "inputs" object are an
error (TF Serving ignores them), and so are base64 strings with characters outside the alphabet.

A body is refused before the (recursive) JSON decoder reads it when it is not UTF-8 or when its
arrays and objects nest deeper than any request to the model can need (`max_nesting`): a body of
100,000 `[` would otherwise exhaust Python's recursion limit.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Callable, Mapping

import numpy as np

from sicot.serving.errors import invalid_argument
from sicot.serving.servable import MAX_RANK, TensorSpecInfo

ROW = "row"
COLUMNAR = "columnar"
BYTES_SUFFIX = "_bytes"

_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))  # deleted by the nesting scan
_NESTING_STEP = np.zeros(256, np.int8)
_NESTING_STEP[[ord("["), ord("{")]] = 1
_NESTING_STEP[[ord("]"), ord("}")]] = -1


def _short(value, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _key(name: str, limit: int = 60) -> str:
    """A key the client sent, shortened for an error message."""
    return name if len(name) <= limit else name[:limit] + "..."


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value) -> bytes:
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument(f"JSON Value: {_short(value)} is not valid base64: unable to base64 decode")


def _dense_shape(value) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _leaf(value, spec: TensorSpecInfo):
    kind = spec.dtype.name
    if spec.is_string:
        if _is_b64(value):
            return _decode_b64(value)
        if isinstance(value, str):
            try:
                return value.encode("utf-8")
            except UnicodeEncodeError:
                raise invalid_argument(f"JSON Value: {_short(value)} is not valid Unicode (an unpaired "
                                       "surrogate escape such as \\ud800 has no UTF-8 encoding)")
        if isinstance(value, dict):
            raise invalid_argument(f"JSON Value: {_short(value)} not formatted correctly for base64 data "
                                   f"(expected an object with the single key 'b64')")
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind.startswith(("int", "uint")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind.startswith(("float", "bfloat", "half", "double")):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    else:
        raise invalid_argument(f"Conversion of JSON to tensor type {kind} is not supported")
    type_name = {dict: "Object", list: "Array", str: "String", bool: "Boolean",
                 type(None): "Null"}.get(type(value), "Number")
    raise invalid_argument(f"JSON Value: {_short(value)} Type: {type_name} is not of expected type: {kind}")


def json_to_array(value, spec: TensorSpecInfo) -> np.ndarray:
    """One JSON value (nested lists of leaves) to an array of the spec's dtype."""
    shape = _dense_shape(value)
    if len(shape) > MAX_RANK:
        raise invalid_argument(f"JSON Value: lists nested {len(shape)} deep; a tensor has at most "
                               f"{MAX_RANK} dimensions")
    flat = []

    def fill(v, level):
        if not isinstance(v, list):
            if level != len(shape):
                raise invalid_argument(f"JSON Value: {_short(v)} found at incorrect level: list depth "
                                       f"{level}, expected every value at depth {len(shape)} "
                                       "(nested lists must be rectangular)")
            flat.append(_leaf(v, spec))
            return
        if level >= len(shape):
            raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
        if len(v) != shape[level]:
            raise invalid_argument(f"Encountered list at unexpected size: {len(v)} at level: {level} "
                                   f"expected size: {shape[level]}")
        for item in v:
            fill(item, level + 1)

    fill(value, 0)
    dtype = object if spec.is_string else np.dtype(spec.dtype.as_numpy_dtype)
    array = np.empty(len(flat), dtype=dtype)
    try:
        array[:] = flat
    except (OverflowError, ValueError):  # 2**64 as int64, 10**400 as float32
        raise invalid_argument(f"JSON Value: {_short(_first_out_of_range(flat, dtype))} is out of range "
                               f"for {spec.dtype.name}")
    return array.reshape(shape)


def _first_out_of_range(values: list, dtype):
    for v in values:
        try:
            np.array([v], dtype=dtype)
        except (OverflowError, ValueError):
            return v
    return values  # not reached: some value failed the conversion


def json_nesting(body: bytes) -> int:
    """How deep arrays and objects nest in a JSON body, outside strings, without recursion:
    escaped backslashes and quotes are dropped, then everything but quotes and brackets; every
    other piece between quotes is outside strings; a running sum of its brackets is the depth."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    quotes_and_brackets = body.translate(None, _NOT_STRUCTURE)
    outside = b"".join(quotes_and_brackets.split(b'"')[::2])
    steps = _NESTING_STEP[np.frombuffer(outside, np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def max_nesting(max_rank: int) -> int:
    """The deepest nesting a request needs for inputs of rank <= `max_rank`: the document, the
    'instances' list or 'inputs' object, a row object, the value's lists and a {"b64": ...}."""
    return min(max_rank, MAX_RANK) + 3


def _rows_to_inputs(instances: list, specs: Mapping[str, TensorSpecInfo]) -> dict[str, np.ndarray]:
    first = instances[0]
    objects = isinstance(first, dict) and not _is_b64(first)
    if not objects and len(specs) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as multiple "
                               f"input tensors required ({', '.join(sorted(specs))})")
    columns: dict[str, list[np.ndarray]] = {k: [] for k in specs}
    for i, row in enumerate(instances):
        row_is_object = isinstance(row, dict) and not _is_b64(row)
        if row_is_object != objects:
            raise invalid_argument(f"Expecting {'object' if objects else 'value/list'} but got "
                                   f"{'object' if row_is_object else 'value/list'} at item {i} of input list")
        items = row.items() if objects else [(next(iter(specs)), row)]
        keys = set()
        for name, value in items:
            if name not in specs:
                raise invalid_argument(f"Failed to process element: {i} key: {_key(name)} of 'instances' "
                                       f"list. Error: JSON object: does not have named input: {_key(name)} "
                                       f"(inputs: {', '.join(sorted(specs))})")
            keys.add(name)
            try:
                array = json_to_array(value, specs[name])
            except Exception as e:
                raise invalid_argument(f"Failed to process element: {i} key: {name} of 'instances' "
                                       f"list. Error: {getattr(e, 'message', e)}")
            if columns[name] and columns[name][0].shape != array.shape:
                raise invalid_argument(f"Failed to process element: {i} key: {name} of 'instances' list. "
                                       f"Expecting shape {list(columns[name][0].shape)} but got: "
                                       f"{list(array.shape)}")
            columns[name].append(array)
        if keys != set(specs):
            raise invalid_argument(f"Failed to process element: {i} of 'instances' list. JSON object: "
                                   f"{_short(row)} must only have keys: {','.join(sorted(specs))}")
    return {k: np.stack(v) if v[0].dtype != object else _stack_objects(v) for k, v in columns.items()}


def _stack_objects(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty((len(arrays),) + arrays[0].shape, dtype=object)
    for i, a in enumerate(arrays):
        out[i, ...] = a
    return out


def _columns_to_inputs(value, specs: Mapping[str, TensorSpecInfo]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(specs) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple "
                                   f"input tensors required ({', '.join(sorted(specs))})")
        name = next(iter(specs))
        return {name: json_to_array(value, specs[name])}
    unknown = sorted(set(value) - set(specs))
    if unknown:
        raise invalid_argument(f"Unknown named input(s): {', '.join(map(_key, unknown))} in 'inputs' object "
                               f"(inputs: {', '.join(sorted(specs))})")
    inputs = {}
    for name, spec in specs.items():
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        inputs[name] = json_to_array(value[name], spec)
    return inputs


def parse_predict_request(body: bytes,
                          input_specs: Callable[[str | None], Mapping[str, TensorSpecInfo]],
                          max_rank: int = MAX_RANK):
    """Parses a `:predict` body; returns (signature_name or None, inputs, ROW | COLUMNAR).

    `input_specs(signature_name)` gives the signature's inputs (and raises for an unknown name);
    `max_rank` is the highest rank of the model's inputs (bounds the body's nesting).
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8-sig")  # RFC 8259: UTF-8 (a byte order mark is tolerated)
    except UnicodeDecodeError as e:
        raise invalid_argument(f"JSON Parse error: the body is not UTF-8 ({e})")
    depth, limit = json_nesting(body), max_nesting(max_rank)
    if depth > limit:
        raise invalid_argument(f"JSON Parse error: arrays and objects nested {depth} deep; a request to "
                               f"this model needs at most {limit} (inputs of rank <= {max_rank}, inside "
                               "the document, 'instances' or 'inputs', a row object and {\"b64\": ...})")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise invalid_argument(f"JSON Parse error: {e.msg} at offset: {e.pos}")
    except ValueError as e:  # an integer of more than sys.get_int_max_str_digits() digits
        raise invalid_argument(f"JSON Parse error: {str(e).split(';')[0]}")
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_short(doc)} Is not object")
    signature_name = doc.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise invalid_argument("'signature_name' key must be a string value.")
    specs = input_specs(signature_name)
    if "instances" in doc and "inputs" in doc:
        raise invalid_argument("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument("Excepting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument("No values in 'instances' array")
        return signature_name, _rows_to_inputs(instances, specs), ROW
    if "inputs" in doc:
        return signature_name, _columns_to_inputs(doc["inputs"], specs), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


# -- responses ----------------------------------------------------------------------------------
def _float_list(array: np.ndarray):
    # str() of a numpy float is the shortest text that round-trips it; parsed back as a Python
    # float (a double) it prints the same, so float32 0.2 is written 0.2, not 0.20000000298.
    return array.astype(str).astype(np.float64).tolist() if array.size else array.tolist()


def _string_value(value: bytes, as_bytes: bool):
    if not as_bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def array_to_json(name: str, array: np.ndarray):
    """An output array as nested JSON lists (TF Serving's AddTensorValues)."""
    if array.dtype == object or array.dtype.kind == "S":
        as_bytes = name.endswith(BYTES_SUFFIX)
        flat = [_string_value(v if isinstance(v, bytes) else str(v).encode(), as_bytes)
                for v in array.reshape(-1)]
        nested = np.empty(len(flat), dtype=object)
        nested[:] = flat
        return nested.reshape(array.shape).tolist()
    if array.dtype.kind == "f":
        return _float_list(array)
    return array.tolist()


def make_predict_response(outputs: Mapping[str, np.ndarray], fmt: str) -> dict:
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    values = {k: array_to_json(k, outputs[k]) for k in names}
    if fmt == COLUMNAR:
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    batch = None
    for k in names:
        if outputs[k].ndim == 0:
            raise invalid_argument(f"Tensor name: {k} has no shape information ")
        if batch is not None and outputs[k].shape[0] != batch:
            raise invalid_argument(f"Tensor name: {k} has inconsistent batch size: "
                                   f"{outputs[k].shape[0]} expecting: {batch}")
        batch = outputs[k].shape[0]
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{k: values[k][i] for k in names} for i in range(batch)]}


def dumps(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode("utf-8")

