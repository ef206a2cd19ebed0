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
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Callable, Mapping

import numpy as np

from sicot.serving.errors import invalid_argument
from sicot.serving.servable import TensorSpecInfo

ROW = "row"
COLUMNAR = "columnar"
BYTES_SUFFIX = "_bytes"


def _short(value, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


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
            return value.encode("utf-8")
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
    array[:] = flat
    return array.reshape(shape)


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
                raise invalid_argument(f"Failed to process element: {i} key: {name} of 'instances' list. "
                                       f"Error: JSON object: does not have named input: {name} "
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
        raise invalid_argument(f"Unknown named input(s): {', '.join(unknown)} in 'inputs' object "
                               f"(inputs: {', '.join(sorted(specs))})")
    inputs = {}
    for name, spec in specs.items():
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        inputs[name] = json_to_array(value[name], spec)
    return inputs


def parse_predict_request(body: bytes,
                          input_specs: Callable[[str | None], Mapping[str, TensorSpecInfo]]):
    """Parses a `:predict` body; returns (signature_name or None, inputs, ROW | COLUMNAR).

    `input_specs(signature_name)` gives the signature's inputs (and raises for an unknown name).
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as e:
        raise invalid_argument(f"JSON Parse error: the body is not UTF-8 ({e})")
    except json.JSONDecodeError as e:
        raise invalid_argument(f"JSON Parse error: {e.msg} at offset: {e.pos}")
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

