"""The tf.distribute strategy of a training process, from TF_CONFIG, and chief-only output paths.

One process (no TF_CONFIG, or a cluster of one task): `MirroredStrategy` over the local
devices. Several tasks in TF_CONFIG's cluster: `MultiWorkerMirroredStrategy` (synchronous
data parallel, collective all-reduce over gRPC). TF_CONFIG is what Vertex AI custom training
sets on every replica (worker pool 0 is task type `chief`, pool 1 `worker`), what the TFX
Trainer on Vertex inherits, and what `tests/trainer/test_multi_worker.py` sets by hand:

    TF_CONFIG='{"cluster": {"chief": ["host0:port"], "worker": ["host1:port"]},
                "task": {"type": "worker", "index": 0}}'

Every worker must run the same steps and also save (saving a distributed model runs
collective ops), but only the chief may write the real outputs: the others write to a
per-task temporary folder that `cleanup_worker_dir` deletes (the pattern of the TensorFlow
multi-worker Keras guide). `MultiWorkerMirroredStrategy` must be created before any other
TensorFlow op runs in the process, so `make_strategy()` comes first in `run_fn`.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping

CHIEF_TYPES = ("chief", "master")
WORKER_TYPES = ("chief", "master", "worker")


def read_tf_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The parsed TF_CONFIG ({} when unset); a malformed value is an error naming the problem."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw[:200]!r}") from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {raw[:200]!r}")
    cluster = config.get("cluster") or {}
    task = config.get("task") or {}
    if cluster:
        if not isinstance(cluster, dict) or not all(
                isinstance(v, list) for v in cluster.values()):
            raise ValueError(f"TF_CONFIG.cluster must map task types to address lists, got "
                             f"{cluster!r}")
        task_type, index = task.get("type"), task.get("index", 0)
        if task_type not in cluster:
            raise ValueError(f"TF_CONFIG.task.type={task_type!r} is not in the cluster "
                             f"{sorted(cluster)}")
        if not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
            raise ValueError(f"TF_CONFIG.task.index={index!r} is out of range for "
                             f"{len(cluster[task_type])} {task_type!r} task(s)")
    return config


def num_workers(tf_config: Mapping[str, Any]) -> int:
    """Training tasks in the cluster (chief + workers; parameter servers and evaluators no)."""
    cluster = tf_config.get("cluster") or {}
    return sum(len(cluster.get(t, [])) for t in WORKER_TYPES)


def task_of(tf_config: Mapping[str, Any]) -> tuple[str | None, int]:
    task = tf_config.get("task") or {}
    return task.get("type"), int(task.get("index", 0))


def is_chief(tf_config: Mapping[str, Any]) -> bool:
    """The chief writes the outputs: task type chief, or worker 0 in a cluster with no chief."""
    if num_workers(tf_config) <= 1:
        return True
    task_type, index = task_of(tf_config)
    if task_type in CHIEF_TYPES:
        return True
    cluster = tf_config.get("cluster") or {}
    has_chief = any(cluster.get(t) for t in CHIEF_TYPES)
    return task_type == "worker" and index == 0 and not has_chief


def make_strategy(tf_config: Mapping[str, Any] | None = None):
    """MultiWorkerMirroredStrategy for a multi-task TF_CONFIG, else MirroredStrategy."""
    import tensorflow as tf

    tf_config = read_tf_config() if tf_config is None else tf_config
    if num_workers(tf_config) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def worker_dir(path: str, tf_config: Mapping[str, Any] | None = None) -> str:
    """`path` on the chief; a per-task temporary folder beside it on the other workers."""
    tf_config = read_tf_config() if tf_config is None else tf_config
    if is_chief(tf_config):
        return path
    task_type, index = task_of(tf_config)
    path = path.rstrip("/")  # not os.path.normpath: it turns gs://b/x into gs:/b/x
    parent = os.path.dirname(path)
    return os.path.join(parent, f".{os.path.basename(path)}-tmp-{task_type}-{index}")


def cleanup_worker_dir(path: str, tf_config: Mapping[str, Any] | None = None) -> None:
    """Deletes a non-chief's temporary folder (never the chief's real output)."""
    tf_config = read_tf_config() if tf_config is None else tf_config
    if is_chief(tf_config):
        return
    import tensorflow as tf

    temp = worker_dir(path, tf_config)
    if tf.io.gfile.exists(temp):
        if "://" in temp:
            tf.io.gfile.rmtree(temp)
        else:
            shutil.rmtree(temp, ignore_errors=True)


def prepare_model_for_multi_worker(model, strategy) -> None:
    """Works around Keras 3 `fit` under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Keras 3.12's TensorFlow trainer fails with several workers in two places, both checked
    by `tests/trainer/test_multi_worker.py`:
      * before the first step `_maybe_symbolic_build` reduces one input batch across workers
        (`strategy.reduce("MEAN", batch)`) only to learn its shapes, which fails for dict
        inputs ("Attempt to convert a value ({'image': PerReplica..."). It only creates state
        that is still missing, so we create that state here (the optimizer slots, under the
        strategy's scope; the model is already built) and skip the step for this model;
      * after each step `reduce_per_replica` averages the scalar metric results with
        `strategy.reduce("MEAN", v, axis=0)` ("Invalid reduction dimension 0 for input with
        0 dimensions"): `_patch_scalar_mean_reduction` reduces rank-0 values with axis=None.
    A no-op for other strategies.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    if not model.built:
        raise ValueError("prepare_model_for_multi_worker: build the model first")
    with strategy.scope():
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

    def already_built(iterator=None, data_batch=None):
        return None

    model._maybe_symbolic_build = already_built
    _patch_scalar_mean_reduction()


def _patch_scalar_mean_reduction() -> None:
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_sicot_patched", False):
        return
    import tensorflow as tf

    def reduce_per_replica(values, strategy, reduction):
        if (reduction in ("auto", "mean")
                and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)):
            def mean(v):
                rank = v.values[0].shape.rank if hasattr(v, "values") else v.shape.rank
                return strategy.reduce("MEAN", v, axis=None if rank == 0 else 0)

            return tf.nest.map_structure(mean, values)
        return original(values, strategy, reduction)

    reduce_per_replica._sicot_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica
