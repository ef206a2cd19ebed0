"""Warm start: a new model starts from the weights of the last trained one.

The Trainer saves, beside every serving model, what a later run needs to start from it:
`<Model artifact>/warm_start/` (`<sicot train --out>/export/warm_start/` for `sicot train`)
holds `model.keras` and `vocabularies.json` (the class names and token vocabulary of its
Transform, in id order). A later run with a base model (the pipeline's `warm_start`
resolver, `sicot train --base-model`) builds its model for ITS classes and vocabulary and then:

  - copies every weight that does not depend on classes or tokens (visual tower, word
    attention projections, text-centre projection, cosine scales) as it is;
  - class tables (the visual, semantic and fused heads' kernel columns and biases): a class
    both runs know keeps its row (found by name, whatever its new id); a new class's row is
    its prototype, the mean feature of its training images under the restored model (the
    visual embedding, the semantic embedding, or both concatenated, L2-normalised and scaled
    to the mean norm of the kept rows; bias = mean kept bias), Qi et al. 2018 "imprinted
    weights"; classes the new data lacks are dropped;
  - token tables (word embeddings, word-predictor rows): a token both vocabularies hold keeps
    its row (found by string); new tokens keep their fresh initialisation;
  - a setting that changes a shape nothing can map (backbone, embedding or token size,
    attention rank, model type, classifier type...) is an error naming the setting and both
    values; so is a weight whose shape differs for another reason (named by its path).

The optimizer state is not carried over: the warm-started run has its own schedule.
"""
from __future__ import annotations

import json
import os

import numpy as np

from sicot import contract

WARM_START_DIR = contract.WARM_START_DIR
KERAS_FILE = "model.keras"
VOCABULARIES_FILE = "vocabularies.json"
# Settings that decide weight shapes or which weights exist: they must match.
SHAPE_SETTINGS = ("model_type", "backbone", "embedding_dim", "token_dim", "attention_rank",
                  "use_attention", "classifier_type", "text_centres", "text_centre_source",
                  "learn_cosine_scale")
CLASS_TABLES = ("visual_head", "semantic_head", "fused_head")


def warm_start_dir(serving_model_dir: str) -> str:
    """Where the files for a later warm start go: beside the serving model folder."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), WARM_START_DIR)


def save_for_warm_start(model, class_names, tokens, serving_model_dir: str) -> str:
    """Writes model.keras and vocabularies.json to `warm_start_dir(serving_model_dir)`."""
    import tensorflow as tf

    folder = warm_start_dir(serving_model_dir)
    tf.io.gfile.makedirs(folder)
    model.save(os.path.join(folder, KERAS_FILE))
    with tf.io.gfile.GFile(os.path.join(folder, VOCABULARIES_FILE), "w") as f:
        f.write(json.dumps({"class_names": list(class_names), "tokens": list(tokens)}))
    return folder


def find_base_model(path: str) -> str:
    """The warm-start folder for `path`: that folder itself, the sibling of a serving model
    folder (TFX `base_model`, `.../Format-Serving`), or a `sicot train --out` folder."""
    import tensorflow as tf

    path = path.rstrip("/")
    candidates = [path, warm_start_dir(path), os.path.join(path, WARM_START_DIR),
                  os.path.join(path, "export", WARM_START_DIR)]
    for folder in candidates:
        if (tf.io.gfile.exists(os.path.join(folder, KERAS_FILE))
                and tf.io.gfile.exists(os.path.join(folder, VOCABULARIES_FILE))):
            return folder
    raise ValueError(f"base model {path}: no {KERAS_FILE} + {VOCABULARIES_FILE} in any of "
                     f"{candidates} (models trained before warm start existed cannot be used)")


def load_base_model(path: str):
    """(Keras model, class names, tokens) of the base model at `path` (see find_base_model)."""
    import tempfile

    import keras
    import tensorflow as tf

    from sicot.trainer.model import sicot_model  # noqa: F401 - registers the classes

    folder = find_base_model(path)
    with tf.io.gfile.GFile(os.path.join(folder, VOCABULARIES_FILE)) as f:
        vocabularies = json.loads(f.read())
    with tempfile.TemporaryDirectory() as tmp:  # Keras loads a local .keras file
        local = os.path.join(tmp, KERAS_FILE)
        tf.io.gfile.copy(os.path.join(folder, KERAS_FILE), local)
        model = keras.models.load_model(local, compile=False)
    return model, vocabularies["class_names"], vocabularies["tokens"]


def _table_kind(path: str):
    """("class", axis) / ("token", axis) / ("derived", None) / (None, None) for a weight path."""
    parts = path.split("/")
    name = parts[-1]
    if len(parts) >= 2 and parts[-2] in CLASS_TABLES and name in ("kernel", "bias"):
        return "class", (-1 if name == "kernel" else 0)
    if path.endswith("word_attention/embedding/embeddings"):
        return "token", 0
    if len(parts) >= 2 and parts[-2] == "word_predictor" and name in ("kernel", "bias"):
        return "token", (-1 if name == "kernel" else 0)
    if name in ("class_word_ids", "class_word_weights"):
        return "derived", None  # rebuilt from the new data (run_fn `_set_class_words`)
    return None, None


def _index_map(old_names, new_names, offset=0):
    """new id -> old id (or -1) for names, ids shifted by `offset` (reserved ids map to
    themselves: token ids 0 padding and 1 out-of-vocabulary)."""
    old_index = {n: i for i, n in enumerate(old_names)}
    mapping = list(range(offset))
    mapping += [old_index[n] + offset if n in old_index else -1 for n in new_names]
    return np.asarray(mapping)


def _take(old, mapping, axis, fresh):
    """fresh with the mapped slices of old copied in along axis."""
    out = np.array(fresh, copy=True)
    kept = np.nonzero(mapping >= 0)[0]
    index = [slice(None)] * out.ndim
    source = [slice(None)] * out.ndim
    index[axis], source[axis] = kept, mapping[kept]
    out[tuple(index)] = old[tuple(source)]
    return out


def class_prototypes(model, batches, num_classes: int):
    """Per class: mean visual embedding, semantic embedding (text models), counts; over
    `batches` of (features dict, labels), in inference mode."""
    from sicot.contract import IMAGE_INPUT, TOKENS_INPUT

    dim = model.model_config.embedding_dim
    sums = {"visual": np.zeros((num_classes, dim))}
    if model.model_config.uses_text:
        sums["semantic"] = np.zeros((num_classes, dim))
    counts = np.zeros(num_classes)
    for features, labels in batches:
        inputs = {IMAGE_INPUT: features[IMAGE_INPUT]}
        if model.model_config.uses_text:
            inputs[TOKENS_INPUT] = features[TOKENS_INPUT]
        outputs = model(inputs, training=False)
        labels = np.asarray(labels).reshape(-1)
        valid = labels < num_classes
        np.add.at(counts, labels[valid], 1)
        np.add.at(sums["visual"], labels[valid], np.asarray(outputs["embedding"])[valid])
        if "semantic" in sums:
            np.add.at(sums["semantic"], labels[valid], np.asarray(outputs["semantic"])[valid])
    means = {k: v / np.maximum(counts, 1)[:, None] for k, v in sums.items()}
    return means, counts


def _head_features(head: str, means):
    if head == "visual_head":
        return means["visual"]
    if head == "semantic_head":
        return means["semantic"]
    return np.concatenate([means["visual"], means["semantic"]], axis=-1)


def check_compatible(old_config: dict, new_config: dict, base: str) -> None:
    for key in SHAPE_SETTINGS:
        if old_config.get(key) != new_config.get(key):
            raise ValueError(
                f"warm start from {base}: the base model has {key}={old_config.get(key)!r}, "
                f"this run {key}={new_config.get(key)!r}; its weights cannot be mapped (train "
                f"without a base model, or with the base model's {key})")
    if (old_config.get("word_prediction_weight", 0) > 0) != (new_config.get("word_prediction_weight", 0) > 0):
        raise ValueError(f"warm start from {base}: word_prediction_weight turns the word "
                         f"predictor on or off ({old_config.get('word_prediction_weight')} -> "
                         f"{new_config.get('word_prediction_weight')}); its weights cannot be mapped")


def warm_start(model, old_model, old_classes, old_tokens, class_names, tokens,
               prototype_batches, base: str = "base model") -> dict:
    """Fills the built `model` (classes `class_names`, token vocabulary `tokens`) from
    `old_model`; returns a report (what was kept, dropped, new, copied)."""
    from sicot import contract
    from sicot.trainer.model.sampled_classifier_head import SampledClassifierHead

    check_compatible(old_model.config, model.config, base)
    if model.sampled or isinstance(getattr(old_model, "visual_head", None), SampledClassifierHead):
        raise ValueError(f"warm start from {base}: sampled classifier heads (Partial FC) are "
                         f"not supported yet")
    class_map = _index_map(old_classes, class_names)
    token_map = _index_map(old_tokens, tokens, offset=contract.FIRST_VOCAB_TOKEN_ID)
    if int(old_model.num_classes) != len(old_classes):
        raise ValueError(f"warm start from {base}: {old_model.num_classes} classes in the model "
                         f"but {len(old_classes)} class names beside it")
    old_weights = {w.path.split("/", 1)[-1]: w for w in old_model.weights}

    # 1. Everything but the class tables, so that the prototypes use the restored model.
    copied, class_tables = 0, []
    for weight in model.weights:
        key = weight.path.split("/", 1)[-1]
        kind, axis = _table_kind(key)
        if kind == "derived":
            continue
        if key not in old_weights:
            raise ValueError(f"warm start from {base}: the base model has no weight {key!r} "
                             f"(a model of another design); it cannot be mapped")
        old = np.asarray(old_weights[key])
        if kind == "class":
            class_tables.append((weight, key, axis, old))
            continue
        if kind == "token":
            value = _take(old, token_map, axis, np.asarray(weight))
        else:
            if old.shape != tuple(weight.shape):
                raise ValueError(f"warm start from {base}: weight {key!r} has shape {old.shape} "
                                 f"in the base model and {tuple(weight.shape)} here; it cannot "
                                 f"be mapped")
            value = old
        weight.assign(value)
        copied += 1

    # 2. Class tables: kept rows by name, new rows from the class prototypes.
    new_ids = np.nonzero(class_map < 0)[0]
    means, counts = (class_prototypes(model, prototype_batches, len(class_names))
                     if len(new_ids) else (None, None))
    for weight, key, axis, old in class_tables:
        value = _take(old, class_map, axis, np.asarray(weight))
        if len(new_ids):
            kept = class_map >= 0
            if axis == 0:  # bias: the mean kept bias
                value[new_ids] = value[kept].mean() if kept.any() else 0.0
            else:
                head = key.split("/")[-2]
                proto = _head_features(head, means)[new_ids]
                proto = proto / np.maximum(np.linalg.norm(proto, axis=-1, keepdims=True), 1e-12)
                norm = (np.linalg.norm(value[:, kept], axis=0).mean() if kept.any()
                        else np.linalg.norm(value, axis=0).mean())
                value[:, new_ids] = (proto * norm).T
        weight.assign(value)
        copied += 1
    tower_sum = float(sum(np.sum(np.asarray(w, dtype="float64"))
                          for w in model.visual_tower.weights))
    return {
        "base_model": base,
        "kept_classes": int((class_map >= 0).sum()),
        "new_classes": [class_names[i] for i in new_ids],
        "new_classes_without_images": [class_names[i] for i in new_ids
                                       if counts is not None and counts[i] == 0],
        "dropped_classes": sorted(set(old_classes) - set(class_names)),
        "kept_tokens": int((token_map[contract.FIRST_VOCAB_TOKEN_ID:] >= 0).sum()),
        "new_tokens": int((token_map[contract.FIRST_VOCAB_TOKEN_ID:] < 0).sum()),
        "copied_weights": copied,
        "visual_tower_weight_sum": tower_sum,  # lets a test check where training started
    }
