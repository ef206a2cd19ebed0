"""Defaults for the SICoT TFX pipeline and the Beam runner presets.

The runners (`local_runner.py`, `kubeflow_v2_runner.py`) and `sicot run` read these defaults,
work out paths and orchestrator settings, and call `sicot.pipeline.pipeline.create_pipeline`
with every setting as a keyword argument. Nothing here imports TFX, Beam or TensorFlow, so
the `sicot` command stays fast to start.

Beam presets (`beam_pipeline_args(preset, **settings)`):
  direct            DirectRunner, in memory, one worker: the default, and what tests use.
  direct-parallel   DirectRunner with `--direct_running_mode=multi_processing` and N workers
                    (N=0: one per CPU). Check record counts: a user reported records dropped
                    in this mode (tensorflow/data-validation issue 247).
  dataflow          Google Cloud Dataflow (Runner v2), code shipped with `--setup_file`.
  flink             Portable Flink runner against a Flink REST endpoint (uber jar submitted).
  spark             Portable Spark runner against a Spark REST endpoint (uber jar submitted).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional

from sicot import contract

PIPELINE_NAME = "sicot"
# Dotted names: the pipeline never imports model code (TFX penguin template convention).
PREPROCESSING_FN = "sicot.trainer.transform.preprocessing.preprocessing_fn"
RUN_FN = "sicot.trainer.task.run_fn"
# The Canary's check (serving code: the pipeline and serving packages do not import each other).
CANARY_FN = "sicot.serving.canary.run_canary_for_pipeline"
# The Enroller's enrolment (`sicot enroll`'s code, model code: named, not imported).
ENROLL_FN = "sicot.trainer.enrollment.catalogue.enroll_for_pipeline"

HELD_OUT_SPLITS = (contract.EVAL_SPLIT, contract.TEST_SPLIT)  # labels must occur in train
ANALYZE_SPLITS = (contract.TRAIN_SPLIT,)
EVALUATE_SPLIT = contract.TEST_SPLIT
BLESSING_QUERY_MODE = contract.IMAGE_ONLY  # the value floors of BlessingThresholds apply to it
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema")
CURATED_SCHEMA = os.path.join(SCHEMA_DIR, "schema.pbtxt")


@dataclasses.dataclass(frozen=True)
class BlessingThresholds:
    """When the Evaluator blesses a model (so that the Canary, then the Pusher, may ship it).

    Two kinds of gate (TFMA thresholds, `pipeline._eval_config`):
      * value floors on image-only top-1 (the query mode that matters: at query time an image
        alone must be recognized), overall and on the few-shot band;
      * change gates against the latest blessed model (TFMA change thresholds; skipped while
        there is no blessed model yet), for BOTH query modes (image_only and image_text):
        overall top-1 may drop at most `max_overall_drop`, few-shot band top-1 and top-5 at
        most `max_few_drop`. So a model that trades the long tail for the head is not blessed
        even when its overall accuracy rises.

    Attributes:
      overall_min_top1: lower bound on the overall slice (image-only top-1).
      few_min_top1: lower bound on the `band_xf=few` slice (image-only top-1). A test split
        with no few-shot example leaves that slice missing, and TFMA then does not bless (by
        design: the long tail must be measured).
      max_overall_drop: largest allowed drop of overall top-1 (absolute, 0.005 = 0.5 points).
      max_few_drop: largest allowed drop of few-band top-1 and top-5 (0.01 = 1 point).
      allow_enrolment_warnings: push a catalogue's enrolled model even when the enrolment check
        warned (enrolled SKUs that queries would almost never name; the Enroller's
        `enrolment_warnings`). False: the Canary refuses it with the warning as its reason, so
        the Pusher does not push it (the Evaluator itself is TFMA's and gates on its metrics).
    """

    overall_min_top1: float = 0.0
    few_min_top1: float = 0.0
    max_overall_drop: float = 0.005
    max_few_drop: float = 0.01
    allow_enrolment_warnings: bool = False

    def __post_init__(self):
        for name in ("overall_min_top1", "few_min_top1", "max_overall_drop", "max_few_drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"BlessingThresholds.{name} must be in [0, 1], got {value!r}")

    def to_dict(self) -> Dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PipelineDefaults:
    """Defaults that `sicot run`, the local runner and the Vertex runner share."""

    pipeline_name: str = PIPELINE_NAME
    train_steps: Optional[int] = None  # None: the trainer runs its epochs over the data
    eval_steps: Optional[int] = None
    enable_cache: bool = True
    max_bad_fraction: Optional[float] = None  # None: ImportConfig's own default


DEFAULTS = PipelineDefaults()

BEAM_PRESETS = ("direct", "direct-parallel", "dataflow", "flink", "spark")
# Those `sicot run` offers (Dataflow runs a compiled pipeline: `sicot compile`).
LOCAL_BEAM_PRESETS = tuple(p for p in BEAM_PRESETS if p != "dataflow")


def beam_pipeline_args(
    preset: str = "direct",
    *,
    num_workers: int = 0,
    project: Optional[str] = None,
    region: Optional[str] = None,
    temp_location: Optional[str] = None,
    setup_file: Optional[str] = None,
    flink_master: str = "localhost:8081",
    spark_rest_url: str = "http://localhost:6066",
    environment_type: str = "LOOPBACK",
    extra: Optional[List[str]] = None,
) -> List[str]:
    """Returns the `beam_pipeline_args` for one of `BEAM_PRESETS`.

    Args:
      preset: one of BEAM_PRESETS.
      num_workers: direct-parallel only; 0 means one worker per CPU.
      project, region, temp_location: dataflow only, all required (temp_location is a
        gs:// path).
      setup_file: dataflow only; defaults to the repository's setup.py so workers install
        the `sicot` package.
      flink_master, spark_rest_url, environment_type: the portable runners. LOOPBACK runs
        the Python workers in this process, right for a local cluster; use DOCKER or
        EXTERNAL for a remote one.
      extra: more flags appended as given (they win over the preset's, as Beam takes the
        last value of a repeated flag).
    """
    if preset == "direct":
        args = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    elif preset == "direct-parallel":
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0 = one per CPU), got {num_workers}")
        args = ["--direct_running_mode=multi_processing", f"--direct_num_workers={num_workers}"]
    elif preset == "dataflow":
        missing = [n for n, v in (("project", project), ("region", region),
                                  ("temp_location", temp_location)) if not v]
        if missing:
            raise ValueError(f"the dataflow preset needs {', '.join(missing)}")
        if setup_file is None:
            setup_file = os.path.join(os.path.dirname(SCHEMA_DIR), os.pardir, "setup.py")
            setup_file = os.path.normpath(setup_file)
        args = [
            "--runner=DataflowRunner",
            f"--project={project}",
            f"--region={region}",
            f"--temp_location={temp_location}",
            "--experiments=use_runner_v2",
            f"--setup_file={setup_file}",
        ]
    elif preset == "flink":
        args = [
            "--runner=FlinkRunner",
            f"--flink_master={flink_master}",
            "--flink_submit_uber_jar",
            f"--environment_type={environment_type}",
        ]
    elif preset == "spark":
        args = [
            "--runner=SparkRunner",
            "--spark_submit_uber_jar",
            f"--spark_rest_url={spark_rest_url}",
            f"--environment_type={environment_type}",
        ]
    else:
        raise ValueError(f"unknown Beam preset {preset!r}; choose one of {', '.join(BEAM_PRESETS)}")
    return args + list(extra or [])


def vertex_training_config(
    *,
    project: str,
    region: str,
    image: str,
    machine_type: str = "n1-standard-8",
    accelerator_type: Optional[str] = "NVIDIA_TESLA_T4",
    accelerator_count: int = 1,
    worker_count: int = 1,
) -> Dict[str, Any]:
    """The Trainer's custom_config entries that run `run_fn` as a Vertex AI training job.

    With these keys the pipeline uses `tfx.extensions.google_cloud_ai_platform.Trainer`,
    which submits a custom job on `machine_type` with the given GPUs, running `image` (which
    must hold the `sicot` package, like the pipeline image). `worker_count` > 1 adds a second
    worker pool of `worker_count - 1` replicas: Vertex sets TF_CONFIG on every replica (pool
    0 is task type `chief`, pool 1 `worker`), every replica runs the TFX Trainer executor and
    so `run_fn`, which trains with MultiWorkerMirroredStrategy and lets only the chief write
    the model (`sicot.trainer.distribution`).
    """
    if worker_count < 1:
        raise ValueError(f"worker_count must be >= 1, got {worker_count}")
    machine_spec: Dict[str, Any] = {"machine_type": machine_type}
    if accelerator_type and accelerator_count > 0:
        machine_spec["accelerator_type"] = accelerator_type
        machine_spec["accelerator_count"] = accelerator_count
    pools = [{"machine_spec": machine_spec, "replica_count": 1,
              "container_spec": {"image_uri": image}}]
    if worker_count > 1:
        pools.append({"machine_spec": dict(machine_spec), "replica_count": worker_count - 1,
                      "container_spec": {"image_uri": image}})
    return {
        "ai_platform_enable_vertex": True,
        "ai_platform_vertex_region": region,
        "ai_platform_training_args": {
            "project": project,
            "worker_pool_specs": pools,
        },
    }
