"""Run the SICoT pipeline on this machine: LocalDagRunner, Beam DirectRunner, SQLite MLMD.

Two ways in:
  * `sicot run --data DIR --pipeline-root DIR --serving-dir DIR ...` calls `run_local`.
  * the TFX CLI, which executes this file (so it builds the pipeline at import time from
    environment variables, like the TFX template's local_runner.py):

      export SICOT_DATA=/path/to/dataset SICOT_HOME=/path/to/work   # see ENV below
      tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py
      tfx run create --engine local --pipeline_name sicot

ENV (all optional except SICOT_DATA):
  SICOT_DATA            dataset folder (manifests + images) or imported TFRecords
  SICOT_HOME            work folder (default ./runs); pipeline root <home>/tfx/<name>,
                        serving dir <home>/serving/<name>
  SICOT_PIPELINE_ROOT, SICOT_SERVING_DIR   override those two
  SICOT_PIPELINE_NAME   default "sicot"
  SICOT_MODEL, SICOT_EPOCHS, SICOT_BACKBONE, SICOT_SEED, SICOT_BATCH_SIZE, SICOT_IMAGE_SIZE,
  SICOT_BAND_EDGES, SICOT_BACKBONE_WEIGHTS, SICOT_BACKBONE_FROZEN_EPOCHS
                        the options of `sicot run` (--model, ..., --backbone-frozen-epochs N),
                        mapped by the same `sicot.trainer.options.configs_from_options`
  SICOT_BEAM_PRESET     direct (default) | direct-parallel | flink | spark
  SICOT_ALLOW_UNSEEN_LABELS   splits (eval,test) that may hold labels train never has
  SICOT_NO_CACHE=1      disable caching
  SICOT_CATALOG         catalogue JSONL enrolled after the Trainer (the Enroller; `sicot run
                        --catalog`), with its default enrolment settings
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Dict, Optional, Sequence

from sicot import console
from sicot.paths import absolute
from sicot.pipeline import configs
from sicot.pipeline import pipeline as sicot_pipeline
from sicot.trainer import options

METADATA_FILE = "metadata.sqlite"


def metadata_path(pipeline_root: str) -> str:
    """The SQLite MLMD file of a local pipeline root."""
    return os.path.join(pipeline_root, METADATA_FILE)


def build_local_pipeline(
    *,
    data_root: str,
    pipeline_root: str,
    serving_dir: str,
    pipeline_name: str = configs.PIPELINE_NAME,
    beam_pipeline_args: Optional[Sequence[str]] = None,
    metadata_file: Optional[str] = None,
    **settings: Any,
):
    """`create_pipeline` with a local SQLite MLMD (default: under a local pipeline root).

    The data root, pipeline root and serving dir may be URLs (gs://...): every component
    reads and writes them through tf.io.gfile / Beam FileSystems; only the SQLite file of
    MLMD must be local (`metadata_file`).
    """
    import tensorflow as tf
    from tfx import v1 as tfx

    from sicot.pipeline import gfile_beam_filesystem  # noqa: F401 - ram:// for Beam too

    tf.io.gfile.makedirs(pipeline_root)
    if metadata_file is None:
        metadata_file = metadata_path(pipeline_root)
    os.makedirs(os.path.dirname(os.path.abspath(metadata_file)), exist_ok=True)
    return sicot_pipeline.create_pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        data_root=data_root,
        serving_dir=serving_dir,
        beam_pipeline_args=list(beam_pipeline_args or configs.beam_pipeline_args("direct")),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            metadata_file),
        **settings,
    )


def run_local(*, progress: bool = False, **kwargs: Any) -> None:
    """Builds (see `build_local_pipeline`) and runs the pipeline; raises if a component fails.

    With `progress`, a bar on the terminal counts the components as they finish.
    """
    from tfx import v1 as tfx

    pipeline = build_local_pipeline(**kwargs)
    with _component_progress(len(pipeline.components), enabled=progress):
        tfx.orchestration.LocalDagRunner().run(pipeline)


@contextlib.contextmanager
def _component_progress(total: int, enabled: bool):
    """Follows LocalDagRunner's own 'Component X is running/finished.' log records."""
    if not enabled:
        yield
        return
    absl_logger = logging.getLogger("absl")
    bar = console.progress(total=total, unit="component", desc="sicot run")

    class Follow(logging.Handler):
        def emit(self, record):
            if record.msg == "Component %s is running.":
                bar.set_description(f"sicot run: {record.args[0]}")
            elif record.msg == "Component %s is finished.":
                bar.update(1)

    handler, level = Follow(logging.INFO), absl_logger.level
    absl_logger.addHandler(handler)
    if absl_logger.getEffectiveLevel() > logging.INFO:
        absl_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        absl_logger.removeHandler(handler)
        absl_logger.setLevel(level)
        bar.close()


def settings_from_env(env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """`build_local_pipeline` keyword arguments from the SICOT_* environment variables."""
    env = dict(os.environ if env is None else env)
    if not env.get("SICOT_DATA"):
        raise ValueError("set SICOT_DATA to the dataset folder (see pipeline/local_runner.py)")
    name = env.get("SICOT_PIPELINE_NAME", configs.PIPELINE_NAME)
    home = os.path.abspath(env.get("SICOT_HOME", "runs"))
    transform, model = options.configs_from_env(env)
    catalog = env.get("SICOT_CATALOG") or None
    return dict(
        catalog=absolute(catalog) if catalog else None,
        data_root=os.path.abspath(env["SICOT_DATA"]),
        pipeline_name=name,
        pipeline_root=os.path.abspath(env.get("SICOT_PIPELINE_ROOT",
                                              os.path.join(home, "tfx", name))),
        serving_dir=os.path.abspath(env.get("SICOT_SERVING_DIR",
                                            os.path.join(home, "serving", name))),
        model_config=model.to_dict(),
        transform_config=transform.to_dict(),
        beam_pipeline_args=configs.beam_pipeline_args(env.get("SICOT_BEAM_PRESET", "direct")),
        enable_cache=env.get("SICOT_NO_CACHE", "") not in ("1", "true", "yes"),
        allow_unseen_labels=[s.strip() for s in
                             env.get("SICOT_ALLOW_UNSEEN_LABELS", "").split(",") if s.strip()],
    )


if __name__ == "__main__":
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    run_local(**settings_from_env())
