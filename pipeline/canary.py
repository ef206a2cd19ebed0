"""`Canary`: between Evaluator and Pusher, serve the candidate on loopback and check it answers.

TFX's InfraValidator does this with a TF Serving container (Docker or Kubernetes, which we do
not have here). This component calls `canary_fn` (default `configs.CANARY_FN` =
`sicot.serving.canary.run_canary_for_pipeline`, named by dotted string like the Trainer's
run_fn: the pipeline package never imports the serving package): the candidate loaded by the
same `ModelServer` that `sicot serve` runs, on 127.0.0.1, real gRPC and REST requests for
every signature built from held-out records (eval split, test when there is none), answers and
latency checked against `CanaryLimits` (fields given as the JSON `limits`).

Output: an `InfraBlessing` artifact (the type InfraValidator writes) with custom properties
`blessed` (1/0, what the Pusher reads: `infra_blessing` input), `reason` (the failures, or the
Evaluator's refusal) and `max_p99_ms`, plus `canary_report.json` in its folder. A model the
Evaluator did not bless is not served at all (blessed = 0, reason says so), nor is a catalogue's
enrolled model whose enrolment check warned (the Enroller's `enrolment_warnings` on the model:
enrolled SKUs that queries would almost never name) unless `refuse_enrolment_warnings` is 0
(`BlessingThresholds.allow_enrolment_warnings`, `sicot run --allow-enrolment-warnings`). The
Pusher pushes only when both the Evaluator's and the Canary's blessings say 1, so a failed canary leaves the
serving directory, and the version it serves, untouched.
"""

import json
import os
from typing import Dict, List, Optional

from tfx import v1 as tfx

from sicot import contract

REPORT_FILE = "canary_report.json"
RECORD_SPLITS = f"{contract.EVAL_SPLIT},{contract.TEST_SPLIT}"  # the first of these the Examples artifact has gives the records


def read_records(examples_artifact, splits: List[str], limit: Optional[int]
                 ) -> List[Dict[str, bytes]]:
    """Up to `limit` (None: all) raw records (feature name -> bytes) of the first split
    present."""
    import tensorflow as tf
    from tfx.types import artifact_utils

    present = artifact_utils.decode_split_names(examples_artifact.split_names)
    split = next((s for s in splits if s in present), None)
    if split is None:
        raise ValueError(f"the examples {examples_artifact.uri} have none of the splits "
                         f"{splits} (they have {present})")
    files = tf.io.gfile.glob(os.path.join(
        artifact_utils.get_split_uri([examples_artifact], split), "*"))
    records = []
    for raw in tf.data.TFRecordDataset(sorted(files), compression_type="GZIP").take(
            -1 if limit is None else limit):
        feature_map = tf.train.Example.FromString(raw.numpy()).features.feature
        records.append({k: feature_map[k].bytes_list.value[0] for k in contract.RAW_FEATURE_KEYS
                        if k in feature_map and feature_map[k].bytes_list.value})
    return records


def _call(dotted_name: str, *args):
    import importlib

    module, _, name = dotted_name.rpartition(".")
    return getattr(importlib.import_module(module), name)(*args)


@tfx.dsl.components.component
def Canary(  # noqa: N802 - TFX component names are classes
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    model_blessing: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.InfraBlessing],
    limits: tfx.dsl.components.Parameter[str] = "{}",
    canary_fn: tfx.dsl.components.Parameter[str] = "sicot.serving.canary.run_canary_for_pipeline",
    num_records: tfx.dsl.components.Parameter[int] = 16,
    refuse_enrolment_warnings: tfx.dsl.components.Parameter[int] = 1,
) -> None:
    """Blesses (blessed=1) a candidate that loads and answers every signature within limits.

    `canary_fn(model_dir, records, limits: dict) -> report dict` with keys passed (bool),
    failures (list of str), max_p99_ms (float or None); `num_records` held-out records are
    read for it (`limits["num_records"]` wins when given)."""
    import tensorflow as tf
    from tfx.types import artifact_utils

    settings = json.loads(limits or "{}")
    if model_blessing.get_int_custom_property("blessed") != 1:
        report = {"passed": False, "max_p99_ms": None,
                  "failures": ["not served: the Evaluator did not bless the model"]}
    elif refuse_enrolment_warnings and model.get_int_custom_property("enrolment_warnings") > 0:
        report = {"passed": False, "max_p99_ms": None, "failures": [
            "not served: the enrolment check warned: "
            + model.get_string_custom_property("enrolment_warning")
            + " (push it anyway: --allow-enrolment-warnings)"]}
    else:
        records = read_records(examples, RECORD_SPLITS.split(","),
                               int(settings.get("num_records", num_records)))
        model_dir = artifact_utils.get_single_uri([model])
        serving_dir = os.path.join(model_dir, "Format-Serving")  # TFX Trainer layout
        if tf.io.gfile.exists(os.path.join(serving_dir, "saved_model.pb")):
            model_dir = serving_dir
        report = _call(canary_fn, model_dir, records, settings)
    tf.io.gfile.makedirs(blessing.uri)
    with tf.io.gfile.GFile(os.path.join(blessing.uri, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    blessing.set_int_custom_property("blessed", 1 if report["passed"] else 0)
    blessing.set_string_custom_property("reason",
                                        "; ".join(report["failures"])[:2000] or "passed")
    if report.get("max_p99_ms") is not None:
        blessing.set_float_custom_property("max_p99_ms", float(report["max_p99_ms"]))
