"""Pretrained weights for the visual tower (`--backbone-weights PATH`, `ModelConfig.backbone_weights`).

Two kinds of Keras weights file are accepted:
  - a `keras.applications` ResNet-50 file for the `resnet50` backbone (the legacy HDF5 layout
    with a `layer_names` attribute, e.g. `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`
    from a machine that can download it; see docs/pipeline.md); it fills the ResNet-50 and
    leaves the projection to the embedding freshly initialised;
  - a visual tower file written by `save_tower_weights` (Keras 3 `.weights.h5`; `sicot train`
    and the Trainer write one beside every trained model as `visual_tower.weights.h5`), for
    either backbone; it fills the whole tower, projection included.

Every weight of the file is checked against the tower before anything is assigned: a file
that does not fit is refused with a ValueError naming the first layer that does not match
(in the file's layer order) and both shapes, instead of Keras' silent partial loads (a
Keras 3 file with extra layers loads without a word). PATH may be any `tf.io.gfile` path
(gs://...): it is copied to a local temporary file, since HDF5 reads local files only.

`initialise_tower` is the one entry point of training: it also takes "imagenet", the ImageNet
weights an installed package ships for `efficientnet_lite0` (`imagenet_weights.py`).
"""
from __future__ import annotations

import os
import shutil
import tempfile

TOWER_WEIGHTS_FILE = "visual_tower.weights.h5"


def _wrapper(tower):
    """A functional model around the built tower: Keras 3 saves and loads weights of models."""
    import keras

    size = tower.input_image_shape
    inputs = keras.Input(size)
    return keras.Model(inputs, tower(inputs), name="visual_tower_weights")


def save_tower_weights(tower, path: str) -> None:
    """Writes the tower's weights (Keras 3 `.weights.h5`) to `path` (any tf.io.gfile path)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, TOWER_WEIGHTS_FILE)
        _wrapper(tower).save_weights(local)
        tf.io.gfile.makedirs(os.path.dirname(path) or ".")
        tf.io.gfile.copy(local, path, overwrite=True)


def _layer_shapes_keras3(group) -> dict[str, list[tuple]]:
    """Layer path -> shapes of its variables, for a Keras 3 weights file (`<path>/vars/<i>`)."""
    import h5py

    layers: dict[str, list[tuple]] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and name.endswith("/vars") and len(obj):
            layer = name[: -len("/vars")]
            layers[layer] = [tuple(obj[str(i)].shape) for i in range(len(obj))]

    group.visititems(visit)
    return layers


def _legacy_group(f):
    if "layer_names" in f.attrs:
        return f
    if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
        return f["model_weights"]
    return None


def _legacy_layers(group) -> list[tuple[str, list[tuple]]]:
    """[(layer name, weight shapes)] in the file's order, layers with weights only."""
    def text(v):
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)

    out = []
    for name in (text(n) for n in group.attrs["layer_names"]):
        layer = group[name]
        weight_names = [text(w) for w in layer.attrs.get("weight_names", [])]
        if weight_names:
            out.append((name, [tuple(layer[w].shape) for w in weight_names]))
    return out


def _mismatch(path, what, layer, found, expected):
    return ValueError(
        f"backbone weights {path} do not fit the {what}: first mismatching layer "
        f"{layer!r}: the file has {found}, the tower needs {expected}")


def _check_legacy(resnet, group, path):
    file_layers = _legacy_layers(group)
    model_layers = [(layer.name, [tuple(w.shape) for w in layer.weights])
                    for layer in resnet.layers if layer.weights]
    for k in range(max(len(file_layers), len(model_layers))):
        if k >= len(file_layers):
            name, shapes = model_layers[k]
            raise _mismatch(path, "resnet50 tower", name, "no such layer (it ends at "
                            f"{file_layers[-1][0] if file_layers else 'nothing'})",
                            f"weights of shapes {shapes}")
        if k >= len(model_layers):
            name, shapes = file_layers[k]
            hint = (" (a file with the classification top: use the `_notop` file)"
                    if name == "predictions" else "")
            raise _mismatch(path, "resnet50 tower", name, f"weights of shapes {shapes}",
                            "no such layer" + hint)
        (file_name, file_shapes), (model_name, model_shapes) = file_layers[k], model_layers[k]
        if file_name != model_name or file_shapes != model_shapes:
            raise _mismatch(path, "resnet50 tower", model_name,
                            f"layer {file_name!r} with weights {file_shapes}",
                            f"weights {model_shapes}")


def _check_keras3(wrapper, group, path, what):
    import h5py

    with tempfile.TemporaryDirectory() as tmp:
        reference = os.path.join(tmp, "expected.weights.h5")
        wrapper.save_weights(reference)
        with h5py.File(reference, "r") as f:
            expected = _layer_shapes_keras3(f)
    found = _layer_shapes_keras3(group)
    for layer in sorted(set(expected) | set(found)):
        if expected.get(layer) != found.get(layer):
            raise _mismatch(path, what, layer,
                            f"weights {found[layer]}" if layer in found else "no such layer",
                            f"weights {expected[layer]}" if layer in expected
                            else "no such layer")


def load_backbone_weights(tower, path: str) -> str:
    """Loads `path` into the built `VisualTower`; returns which kind of file it was
    ("keras.applications" or "visual_tower"). Raises ValueError when the file does not fit."""
    import h5py
    import tensorflow as tf

    if not tower.built:
        raise ValueError("load_backbone_weights: build the tower first")
    if not tf.io.gfile.exists(path):
        raise ValueError(f"backbone weights {path}: no such file")
    what = (f"{tower.backbone} tower (embedding_dim={tower.embedding_dim}"
            + (f", stage_widths={list(tower.stage_widths)})" if tower.backbone == "small"
               else ")"))
    with tempfile.TemporaryDirectory() as tmp:
        with tf.io.gfile.GFile(path, "rb") as src, open(os.path.join(tmp, "in.h5"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        try:
            f = h5py.File(os.path.join(tmp, "in.h5"), "r")
        except OSError as e:
            raise ValueError(f"backbone weights {path}: not an HDF5 weights file ({e})") from None
        with f:
            legacy = _legacy_group(f)
            if legacy is not None:
                if tower.backbone != "resnet50":
                    raise ValueError(
                        f"backbone weights {path}: a keras.applications file fits the resnet50 "
                        f"backbone, this tower is {tower.backbone!r}; for `small` give a "
                        f"{TOWER_WEIGHTS_FILE} written by `sicot train`")
                _check_legacy(tower.resnet, legacy, path)
                kind, local = "keras.applications", os.path.join(tmp, "in.h5")
            else:
                wrapper = _wrapper(tower)
                _check_keras3(wrapper, f, path, what)
                kind = "visual_tower"
        if kind == "keras.applications":
            tower.resnet.load_weights(local)
        else:
            # Keras picks the format by the file name.
            local = os.path.join(tmp, TOWER_WEIGHTS_FILE)
            os.replace(os.path.join(tmp, "in.h5"), local)
            wrapper.load_weights(local)
    return kind


def initialise_tower(tower, weights: str) -> str:
    """Starts the built tower from `weights` (`ModelConfig.tower_weights`): "imagenet" (the
    packaged ImageNet weights of the backbone, `imagenet_weights.py`) or a weights file
    (`load_backbone_weights`). Returns the kind of weights loaded."""
    if weights == "imagenet":
        from sicot.trainer.backbones.imagenet_weights import load_imagenet_weights

        if tower.backbone != "efficientnet_lite0":
            raise ValueError(f"backbone weights 'imagenet' are packaged for efficientnet_lite0, "
                             f"not {tower.backbone!r}")
        return load_imagenet_weights(tower.efficientnet)
    return load_backbone_weights(tower, weights)
