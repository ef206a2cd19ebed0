"""`Enroller`: after the Trainer, enrol a catalogue's SKUs into the trained model (no gradient).

Built by `create_pipeline` only when a catalogue is given (`sicot run --catalog FILE.jsonl`,
`SICOT_CATALOG` for the TFX CLI runners, `sicot compile --catalog gs://...`). It runs the code
of `sicot enroll` (`sicot.trainer.enrollment.catalogue.enroll_model`, called through `enroll_fn`, by dotted
name like the Trainer's run_fn: the pipeline package never imports model code) on the
Trainer's `model` and `model_run` artifacts with the Transform graph, and outputs:

  model       a Model artifact laid out like the Trainer's (`<uri>/Format-Serving/` the
              SavedModel with the trained + enrolled classes and the search signatures,
              `<uri>/warm_start/` the trained model's warm-start files), so the Evaluator,
              ErrorReport, Canary, Pusher and BulkInferrer take it in place of the Trainer's;
  model_run   a ModelRun artifact: the enrolled model.keras, class names, search items,
              calibration and `enrolment.json` (every SKU enrolled, its source line);
  quarantine  `catalogue_quarantine.jsonl`: every catalogue line or photo that could not be
              used, with its source (`<file>:<line>`) and reason.

Custom properties: on `model`, `num_classes`, `enrolled_classes`, and the enrolment check
(`sicot.trainer.enrollment.enrolment_check`, as in `enrolment.json`): `enrolment_warnings` (the
number of warnings, e.g. enrolled SKUs that image-only queries would almost never name),
`enrolment_warning` (their text, "" when none), `enrolment_check` (JSON: per head the rule
chosen, why, and each rule's figures); on `quarantine`, `quarantined` (lines and photos) and
`catalogue`. The Canary refuses a model whose enrolment check warned unless
`BlessingThresholds.allow_enrolment_warnings` (`sicot run --allow-enrolment-warnings`).

Caching: `catalog_fingerprint` (the SHA-256 of the catalogue file, computed when the pipeline
is built, see `catalogue_fingerprint`) makes a changed catalogue re-run the Enroller; the
photos it names are not fingerprinted (as for ManifestExampleGen): replace a photo in place and
re-run with caching off, or touch the catalogue.
"""

import hashlib
import json

from tfx import v1 as tfx


class CatalogueQuarantine(tfx.dsl.Artifact):
    """A folder holding catalogue_quarantine.jsonl (one JSON object per refused line/photo)."""

    TYPE_NAME = "sicot.CatalogueQuarantine"  # KFP schema title form: namespace.Name


def catalogue_fingerprint(path: str) -> str:
    """SHA-256 of the catalogue file. Raises ValueError naming a local file that is missing; a
    URL this machine cannot read (a compile for Vertex without credentials) gives "" and the
    Enroller reports it at run time."""
    import tensorflow as tf

    from sicot.paths import is_remote

    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except tf.errors.OpError as e:
        if is_remote(path):
            return ""
        raise ValueError(f"catalogue {path}: no such file" if not tf.io.gfile.exists(path)
                         else f"catalogue {path} cannot be read: {e.message}") from None


def _call(dotted_name: str, **kwargs):
    import importlib

    module, _, name = dotted_name.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


@tfx.dsl.components.component
def Enroller(  # noqa: N802 - TFX component names are classes
    trained_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    trained_model_run: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelRun],
    transform_graph: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.TransformGraph],
    transformed_examples: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.Examples],
    model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    model_run: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelRun],
    quarantine: tfx.dsl.components.OutputArtifact[CatalogueQuarantine],
    catalog: tfx.dsl.components.Parameter[str],
    catalog_fingerprint: tfx.dsl.components.Parameter[str] = "",
    settings: tfx.dsl.components.Parameter[str] = "{}",
    enroll_fn: tfx.dsl.components.Parameter[str] = "sicot.trainer.enrollment.catalogue.enroll_for_pipeline",
) -> None:
    """Enrols `catalog` into the trained model (see the module doc).

    `transformed_examples` (train split, and eval when there is one) are read only when the
    trained model has no saved enrolment calibration (a sampled-head model), to fit one.
    `settings`: JSON of `sicot.trainer.enrollment.catalogue.enroll_settings` fields
    (max_images_per_sku, use_text, trained_budget, scoring, max_trained_drop). A catalogue that
    cannot be read stops the run with an error naming it; bad lines are quarantined, not
    fatal; the enrolment check's warnings are logged as warnings and recorded on `model`."""
    from absl import logging

    from tfx.types import artifact_utils

    report = _call(
        enroll_fn,
        trained_model=artifact_utils.get_single_uri([trained_model]),
        trained_model_run=artifact_utils.get_single_uri([trained_model_run]),
        transform_graph=artifact_utils.get_single_uri([transform_graph]),
        transformed_examples=artifact_utils.get_single_uri([transformed_examples]),
        catalogue_path=catalog, model=model.uri, model_run=model_run.uri,
        quarantine=quarantine.uri, settings=json.loads(settings or "{}"),
        log=logging.info, warn=logging.warning)
    model.set_int_custom_property("num_classes", int(report["num_classes"]))
    model.set_int_custom_property("enrolled_classes", int(report["enrolled_classes"]))
    warnings = list(report.get("warnings", []))
    model.set_int_custom_property("enrolment_warnings", len(warnings))
    model.set_string_custom_property("enrolment_warning", "; ".join(warnings)[:2000])
    model.set_string_custom_property("enrolment_check",
                                     json.dumps(report.get("check", {}), sort_keys=True))
    model.set_string_custom_property("catalogue", catalog)
    quarantine.set_int_custom_property("quarantined",
                                       int(report["catalogue"]["quarantined"]))
    quarantine.set_string_custom_property("catalogue", catalog)
    quarantine.set_string_custom_property("file", report["quarantine"])
