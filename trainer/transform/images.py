"""Image ops shared by the Transform, the trainer's tf.data input and the serving signatures.

The Transform stores every image compactly as JPEG bytes (`store_images`), at most
`stored_side(S)` pixels on its longer side: a JPEG that already fits is kept byte for byte
(its header is read, nothing is decoded); anything else (PNG, GIF, BMP, larger images) is
decoded, shrunk to fit if needed (aspect kept, antialiased) and encoded as JPEG. Decoding to the
model's S x S input happens later, in parallel in tf.data for training and inside the serving
signature at inference, with the same function (`model_image`): decode, resize with padding
(aspect kept), round to 0..255. Training can instead take a random resized crop of the stored
image (`random_resized_crop`), which is why the stored image keeps more pixels than S.
"""
from __future__ import annotations

import math

from sicot import contract

# The stored image keeps this many times the model's input side (longer side), so a random
# crop of a quarter of the area still has S pixels across.
STORED_SIDE_FACTOR = 2.0
JPEG_QUALITY = 90


def transform_image_size(tf_transform_output) -> int:
    """The model input side S the Transform stored its images for (its `image_size`
    vocabulary, one line)."""
    (size,) = tf_transform_output.vocabulary_by_name(contract.IMAGE_SIZE_VOCAB_NAME)
    return int(size)


def stored_side(image_size: int, factor: float = STORED_SIDE_FACTOR) -> int:
    return int(math.ceil(image_size * factor))


def store_images(image_bytes, max_side: int, quality: int = JPEG_QUALITY):
    """Encoded images [batch] -> JPEG bytes [batch], longer side at most `max_side`.

    Raises InvalidArgumentError (from the decoder) for bytes that are no image.
    """
    import tensorflow as tf

    def one(data):
        def keep():
            return data

        def reencode():
            img = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
            shape = tf.shape(img)
            h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
            scale = tf.minimum(1.0, max_side / tf.maximum(h, w))
            size = tf.cast(tf.maximum(1.0, tf.round(tf.stack([h, w]) * scale)), tf.int32)
            resized = tf.cond(
                scale < 1.0,
                lambda: tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
                    tf.cast(img, tf.float32), size, method="bilinear", antialias=True)), 0.0, 255.0),
                    tf.uint8),
                lambda: img)
            return tf.io.encode_jpeg(resized, quality=quality, chroma_downsampling=True)

        def jpeg_fits():
            shape = tf.image.extract_jpeg_shape(data)
            return tf.logical_and(tf.reduce_max(shape[:2]) <= max_side, tf.equal(shape[2], 3))

        # Greyscale (1-channel) and CMYK (4-channel) JPEGs are re-encoded as 3-channel RGB.
        fits = tf.cond(tf.io.is_jpeg(data), jpeg_fits, lambda: tf.constant(False))
        return tf.cond(fits, keep, reencode)

    return tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec([], tf.string))


def _decode(data):
    import tensorflow as tf

    return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)


def model_image(data, image_size: int):
    """One encoded image -> float32 [S, S, 3], 0..255: decode, resize with padding (aspect
    kept, antialiased), rounded. The eval input and the serving signatures use exactly this."""
    import tensorflow as tf

    img = tf.image.resize_with_pad(tf.cast(_decode(data), tf.float32), image_size, image_size,
                                   method=tf.image.ResizeMethod.BILINEAR, antialias=True)
    img = tf.clip_by_value(tf.round(img), 0.0, 255.0)
    img.set_shape([image_size, image_size, 3])
    return img


def model_images(image_bytes, image_size: int):
    """`model_image` over a batch [batch] of encoded images -> float32 [batch, S, S, 3]."""
    import tensorflow as tf

    return tf.map_fn(lambda b: model_image(b, image_size), image_bytes,
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))


def random_resized_crop(data, image_size: int, min_area: float = 0.25,
                        aspect_range=(3 / 4, 4 / 3), seed=None):
    """One encoded image -> float32 [S, S, 3]: a random crop covering `min_area`..1 of the
    image with aspect ratio in `aspect_range`, resized to S x S (Inception-style scale
    augmentation). JPEGs decode only the crop window."""
    import tensorflow as tf

    shape = tf.cond(tf.io.is_jpeg(data), lambda: tf.image.extract_jpeg_shape(data),
                    lambda: tf.shape(_decode(data), out_type=tf.int32))
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, bounding_boxes=tf.zeros([1, 0, 4]), min_object_covered=0.0,
        aspect_ratio_range=aspect_range, area_range=(min_area, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True, seed=0 if seed is None else seed)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    crop = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_and_crop_jpeg(data, window, channels=3),
        lambda: tf.slice(_decode(data), [begin[0], begin[1], 0], [size[0], size[1], 3]))
    img = tf.image.resize(tf.cast(crop, tf.float32), [image_size, image_size], method="bilinear",
                          antialias=True)
    img = tf.clip_by_value(img, 0.0, 255.0)
    img.set_shape([image_size, image_size, 3])
    return img
