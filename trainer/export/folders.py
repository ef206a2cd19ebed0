"""The folders a training run writes, beside its SavedModel: the Keras model and history
in the run folder, and numbered serving versions (TF Serving's base path layout)."""
from __future__ import annotations

import os
import time

KERAS_MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"


def new_version_dir(base: str) -> str:
    """`base/<version>`: the next serving version, the current Unix time or one past the newest."""
    import tensorflow as tf

    version = int(time.time())
    existing = ([int(d.rstrip("/")) for d in tf.io.gfile.listdir(base) if d.rstrip("/").isdigit()]
                if tf.io.gfile.isdir(base) else [])
    if existing:
        version = max(version, max(existing) + 1)
    return os.path.join(base, str(version))
