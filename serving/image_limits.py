"""The server's image pixel limit: decompression bombs are refused before anything decodes them.

The exported signatures decode the image inside the model (`tf.io.decode_image`, then a float
resize), so a small request can cost a lot of memory: a 187 KB PNG of zeros claiming
8000 x 8000 pixels took about 900 MB and 7 s of CPU to decode and resize on this machine
(docs/security.md). TensorFlow itself refuses only images over 2**29 pixels. The server reads
width and height from the header of every `image` input (and of the `image` feature of every
serialized tf.Example sent to an `examples` input) and answers INVALID_ARGUMENT when
width x height exceeds `max_pixels`, the same rule and default as `sicot import`
(`ImportConfig.max_pixels`), so whatever could be trained on can be served.

Headers that cannot be read (not JPEG/PNG/GIF/BMP, or damaged) are left to the model's
decoder, which rejects them with INVALID_ARGUMENT as TF Serving would.
"""
from __future__ import annotations

import struct
from typing import Mapping

import numpy as np

from sicot import contract
from sicot.serving.errors import invalid_argument


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of JPEG, PNG, GIF or BMP bytes; None when unknown."""
    from sicot.data.importer import header_dimensions, sniff_format

    fmt = sniff_format(data)
    try:
        if fmt is not None:
            return tuple(header_dimensions(data, fmt))
        if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
            return struct.unpack("<HH", data[6:10])
        if data[:2] == b"BM" and len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
    except (ValueError, struct.error):
        return None
    return None


def _check(data, where: str, max_pixels: int) -> None:
    if not isinstance(data, (bytes, np.bytes_)):
        return
    size = image_size(bytes(data))
    if size is not None and size[0] * size[1] > max_pixels:
        width, height = size
        raise invalid_argument(
            f"{where}: the image is {width}x{height} = {width * height} pixels, more than the "
            f"server's limit of {max_pixels} (--max-image-pixels)")


def check_image_inputs(signature_name: str, inputs: Mapping[str, np.ndarray], max_pixels: int | None) -> None:
    """Raises INVALID_ARGUMENT when an image in the request is larger than `max_pixels`."""
    if not max_pixels:
        return
    image = inputs.get(contract.IMAGE_KEY)
    if image is not None:
        for row, value in enumerate(np.asarray(image, dtype=object).ravel()):
            _check(value, f"Input 'image' of signature {signature_name}, row {row}", max_pixels)
    examples = inputs.get(contract.EXAMPLES_INPUT)
    if examples is not None:
        from tensorflow.core.example import example_pb2

        for row, value in enumerate(np.asarray(examples, dtype=object).ravel()):
            if not isinstance(value, (bytes, np.bytes_)):
                continue
            try:
                example = example_pb2.Example.FromString(bytes(value))
            except Exception:  # noqa: BLE001 - the model's parser reports a bad proto
                continue
            feature = example.features.feature.get(contract.IMAGE_KEY)
            if feature is not None:
                for data in feature.bytes_list.value:
                    _check(data, f"Input 'examples' of signature {signature_name}, row {row}",
                           max_pixels)
