"""Compile the SICoT pipeline for Vertex AI Pipelines (Kubeflow V2 pipeline spec JSON).

    sicot compile --target vertex --out sicot_pipeline.json --image IMAGE \
        --data gs://bucket/dataset --pipeline-root gs://bucket/tfx --serving-dir gs://bucket/serving

With `--catalog gs://BUCKET/catalogue/catalogue.jsonl` (`SICOT_CATALOG` for the TFX CLI) an
Enroller after the Trainer enrols that catalogue (photos beside it) and its model is the one
evaluated and pushed (docs/pipeline.md, "Catalogue enrolment").

`IMAGE` is a container with this repository installed (`pip install .` on top of the
`gcr.io/tfx-oss-public/tfx:1.16.0` image); every component, including ManifestExampleGen and
the ValidationGate, runs in it. Submit the JSON with

    from google.cloud import aiplatform
    aiplatform.PipelineJob(display_name="sicot", template_path="sicot_pipeline.json",
                           pipeline_root="gs://bucket/tfx").submit()

To train on GPU workers, pass `trainer_custom_config=configs.vertex_training_config(...)`
(`sicot compile --vertex-project P --vertex-region R [--gpu-type T --gpu-count N]`): the
Trainer then submits a Vertex AI custom job running `run_fn` in the same image on one worker
with the given accelerators (`--vertex-workers N`: a chief pool of 1 and a worker pool of
N - 1 replicas, trained with MultiWorkerMirroredStrategy from the TF_CONFIG Vertex sets, the
chief alone exporting the model); the other components stay on the pipeline's default machines
and Beam runs inside them (DirectRunner) unless `beam_pipeline_args` name Dataflow.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from sicot import contract
from sicot.pipeline import configs
from sicot.pipeline import pipeline as sicot_pipeline

DEFAULT_IMAGE = "gcr.io/tfx-oss-public/tfx:1.16.0"


def compile_vertex(
    *,
    output_file: str,
    image: str = DEFAULT_IMAGE,
    data_root: str,
    pipeline_root: str,
    serving_dir: str,
    dataset_layout: Optional[sicot_pipeline.DatasetLayout] = None,
    **settings: Any,
) -> str:
    """Writes the Vertex pipeline JSON to `output_file` and returns its path.

    `dataset_layout` defaults to manifests `train.jsonl`, `eval.jsonl`, `test.jsonl` (the
    compiler machine usually cannot see a gs:// data root to detect it).
    """
    from tfx import v1 as tfx

    layout = dataset_layout or sicot_pipeline.DatasetLayout(
        "manifest", {s: f"{s}.jsonl" for s in contract.SPLITS})
    pipeline = sicot_pipeline.create_pipeline(
        data_root=data_root,
        pipeline_root=pipeline_root,
        serving_dir=serving_dir,
        dataset_layout=layout,
        metadata_connection_config=None,  # Vertex keeps its own metadata
        **settings,
    )
    output_file = os.path.abspath(output_file)
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(output_file),
        output_filename=os.path.basename(output_file))
    runner.run(pipeline, write_out=True)
    return output_file


if __name__ == "__main__":
    # For `tfx pipeline compile --engine vertex --pipeline_path pipeline/kubeflow_v2_runner.py`.
    compile_vertex(
        output_file=os.environ.get("SICOT_VERTEX_OUT", "sicot_pipeline.json"),
        image=os.environ.get("SICOT_IMAGE", DEFAULT_IMAGE),
        data_root=os.environ.get("SICOT_DATA", "gs://YOUR_BUCKET/sicot/data"),
        pipeline_root=os.environ.get("SICOT_PIPELINE_ROOT", "gs://YOUR_BUCKET/sicot/tfx"),
        serving_dir=os.environ.get("SICOT_SERVING_DIR", "gs://YOUR_BUCKET/sicot/serving"),
        pipeline_name=os.environ.get("SICOT_PIPELINE_NAME", configs.PIPELINE_NAME),
        catalog=os.environ.get("SICOT_CATALOG") or None,  # gs://... catalogue: the Enroller
    )
