"""The Keras side of enrolment: embeddings of a trained model and the enrolled model (the
maths is in `prototypes.py`).

`head_rows` reads each trained head's effective class rows (for a text-centres model the visual
row is the free centre plus the text-composed centre); `build_enrolled` wraps the trained model
(unchanged, shared) in an `EnrolledSICoTModel` with the enrolled classes' prototype heads.
"""
from __future__ import annotations

import numpy as np

from sicot import contract
from sicot.trainer.transform import images as image_ops
from sicot.trainer.model.enrolled_sicot_model import EnrolledSICoTModel
from sicot.trainer.enrollment import prototypes
from sicot.trainer.enrollment.prototypes import HeadRows
from sicot.trainer.model.sampled_classifier_head import SampledClassifierHead
from sicot.trainer.model.sicot_model import SICoTModel

BATCH = 256
HEAD_ATTRIBUTES = {"visual": "visual_head", "semantic": "semantic_head", "fused": "fused_head"}


def model_heads(model: SICoTModel) -> list[str]:
    return ["visual", "semantic", "fused"] if model.model_config.uses_text else ["visual"]


def head_rows(model) -> dict:
    """head name -> HeadRows of the trained classes (effective rows [C, D_in])."""
    model = base_model(model)
    out = {}
    for name in model_heads(model):
        head = getattr(model, HEAD_ATTRIBUTES[name])
        if isinstance(head, SampledClassifierHead):
            rows = np.asarray(head.centres.numpy(), np.float64)
        else:
            rows = np.asarray(head.kernel.numpy(), np.float64).T.copy()
            if name == "visual" and model.model_config.text_centres:
                rows += np.asarray(model.text_centres(), np.float64)
        if head.classifier_type == "linear":
            out[name] = HeadRows("linear", rows, np.asarray(head.bias.numpy(), np.float64))
        else:
            out[name] = HeadRows("cosine", rows, None, float(np.exp(head.log_scale.numpy())))
    return out


def embed(model: SICoTModel, images, tokens=None, batch: int = BATCH, *,
          features=None) -> dict:
    """Embeddings of images float [N, S, S, 3] (0..255), or of the backbone's pooled
    `features` [N, F] (cached, `cached_features.py`) in their place, with tokens [N, T] for a
    text model:
    `visual` v [N, D]; with tokens also `semantic` s (the word attention queried by v) and
    `listing` s0 (queried by nothing: every word weighs the same), and for a model with a
    learned listing projection `listing_visual` (R s0, `listing_to_visual`)."""
    import tensorflow as tf

    n = len(images if features is None else features)
    out = {"visual": []}
    text = tokens is not None and model.model_config.uses_text
    if text:
        out["semantic"], out["listing"] = [], []
        if model.has_listing_projection:
            out["listing_visual"] = []
    for start in range(0, n, batch):
        if features is None:
            v = model.visual_tower(tf.cast(images[start:start + batch], tf.float32),
                                   training=False)
        else:
            v = model.visual_tower.embed(tf.cast(features[start:start + batch], tf.float32))
        out["visual"].append(np.asarray(v))
        if text:
            t = tf.cast(tokens[start:start + batch], tf.int32)
            out["semantic"].append(np.asarray(model.word_attention(v, t)[0]))
            s0 = model.word_attention(tf.zeros_like(v), t)[0]
            out["listing"].append(np.asarray(s0))
            if model.has_listing_projection:
                out["listing_visual"].append(np.asarray(model.listing_to_visual(s0)))
    dim = model.model_config.embedding_dim
    return {k: (np.concatenate(v) if v else np.zeros((0, dim), np.float32))
            for k, v in out.items()}


def embed_listings(model: SICoTModel, tokens, batch: int = BATCH):
    """s0 [N, D] of token rows [N, T] (no image needed)."""
    import tensorflow as tf

    parts = []
    for start in range(0, len(tokens), batch):
        t = tf.cast(tokens[start:start + batch], tf.int32)
        zeros = tf.zeros((tf.shape(t)[0], model.model_config.embedding_dim))
        parts.append(np.asarray(model.word_attention(zeros, t)[0]))
    dim = model.model_config.embedding_dim
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def listing_to_visual(model: SICoTModel, listings, batch: int = BATCH):
    """R s0 [N, D] of listing embeddings s0 [N, D] for a model that learned the listing ->
    visual projection in training (`listing_weight`), else None."""
    if not model.has_listing_projection:
        return None
    parts = [np.asarray(model.listing_to_visual(np.asarray(listings[start:start + batch],
                                                           np.float32)))
             for start in range(0, len(listings), batch)]
    dim = model.model_config.embedding_dim
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def embed_transformed_files(model: SICoTModel, file_pattern, tf_transform_output,
                            batch: int = BATCH) -> dict:
    """Embeddings (as `embed`) and `labels` of every transformed example (one pass)."""
    import tensorflow as tf

    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    if not files:
        raise FileNotFoundError(f"no transformed examples match {patterns}")
    spec = tf_transform_output.transformed_feature_spec()
    keys = (contract.IMAGE_XF, contract.TOKENS_XF, contract.LABEL_XF)
    parse_spec = {k: spec[k] for k in keys}
    size = image_ops.transform_image_size(tf_transform_output)

    def parse(records):
        parsed = tf.io.parse_example(records, parse_spec)
        # compact JPEG -> [S, S, 3], the decode of the trainer's eval input and serving
        parsed[contract.IMAGE_XF] = image_ops.model_images(parsed[contract.IMAGE_XF], size)
        return parsed

    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch).map(parse)
    parts = []
    for b in ds:
        e = embed(model, b[contract.IMAGE_XF], b[contract.TOKENS_XF], batch)
        e["labels"] = b[contract.LABEL_XF].numpy().reshape(-1)
        parts.append(e)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def transform_raw(tf_transform_output, images, titles=None, tags=None, batch: int = BATCH):
    """(images float32 [N, S, S, 3], tokens int32 [N, T]) of raw encoded images and texts,
    through the Transform graph exactly as the serving signatures run it."""
    import tensorflow as tf

    from sicot.trainer.export.saved_model import _raw_from_strings

    layer = tf_transform_output.transform_features_layer()
    raw_spec = dict(tf_transform_output.raw_feature_spec())
    size = image_ops.transform_image_size(tf_transform_output)
    n = len(images)
    titles = list(titles) if titles is not None else [b""] * n
    tags = list(tags) if tags is not None else [b""] * n

    # One traced graph for every batch: run eagerly, the decode's map_fn would call Python
    # once per image (3/4 of `sicot enroll`'s time for 1,500 photos before this).
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)] * 3)
    def transform(image, title, tag):
        raw = _raw_from_strings({contract.IMAGE_KEY: image, contract.TITLE_KEY: title,
                                 contract.TAGS_KEY: tag}, raw_spec)
        transformed = layer(raw)
        return (image_ops.model_images(transformed[contract.IMAGE_XF], size),
                tf.cast(transformed[contract.TOKENS_XF], tf.int32))

    out_images, out_tokens = [], []
    for start in range(0, n, batch):
        def strings(values):
            return tf.constant([v.encode("utf-8") if isinstance(v, str) else v
                                for v in values[start:start + batch]], tf.string)

        batch_images, batch_tokens = transform(strings(images), strings(titles), strings(tags))
        out_images.append(batch_images.numpy())
        out_tokens.append(batch_tokens.numpy())
    if not out_images:
        return None, None
    return np.concatenate(out_images), np.concatenate(out_tokens)


def base_model(model) -> SICoTModel:
    """The trained SICoTModel of a model (itself, or the base of an enrolled one)."""
    return model.base if isinstance(model, EnrolledSICoTModel) else model


def build_enrolled(model, scores: dict, image_size: int) -> EnrolledSICoTModel:
    """The trained model with the enrolled classes of `scores` (head name ->
    `prototypes.EnrolledScores`, every head of the model), replacing any enrolled before.
    `image_size` is the Transform's (`sicot.trainer.transform.output.model_shapes`): a reloaded enrolled
    model builds its base with the shape recorded here."""
    base = base_model(model)
    count = len(scores["visual"].prototypes)
    # enrolled_scores gives trained prototypes only where classes are enrolled
    same_footing = [name for name in model_heads(base)
                    if scores[name].trained_prototypes is not None]
    enrolled = EnrolledSICoTModel(base, count, same_footing, name=base.name)
    enrolled.build({contract.IMAGE_INPUT: (None, image_size, image_size, 3),
                    contract.TOKENS_INPUT: (None, None)})
    for name in model_heads(base):
        head = enrolled.enrolled_head(name)
        head.prototypes.assign(np.asarray(scores[name].prototypes, "float32").reshape(
            count, head.input_dim))
        head.scale.assign(float(scores[name].scale))
        head.offset.assign(float(scores[name].offset))
        trained = enrolled.trained_head(name)
        if trained is not None:  # same footing: the trained classes by their class means
            trained.prototypes.assign(np.asarray(scores[name].trained_prototypes, "float32"))
            trained.scale.assign(float(scores[name].scale))
            trained.offset.assign(0.0)
    return enrolled


def fit_model_calibration(model, train_files, tf_transform_output, eval_files=None,
                          cached=None):
    """Embeds the training examples (and the held-out eval examples, when given) and fits
    `prototypes.Calibration` on them. `cached`: {"train"/"eval": (features, tokens, labels)}
    of the model's current backbone, used in place of a pass over that split's images."""
    base = base_model(model)
    cached = cached or {}

    def embed_split(split, files):
        if split in cached:
            features, tokens, labels = cached[split]
            return {**embed(base, None, tokens, features=features),
                    "labels": np.asarray(labels).reshape(-1)}
        return embed_transformed_files(base, files, tf_transform_output)

    train = embed_split("train", train_files)
    held_out = embed_split("eval", eval_files) if eval_files else None
    return prototypes.fit_calibration(train, head_rows(base), base.num_classes,
                                      seed=base.model_config.seed, held_out=held_out)
