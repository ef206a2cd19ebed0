"""`ScoringReport`: BulkInferrer's prediction logs -> predictions, suspects, duplicates, counts.

The pipeline batch-scores the chosen splits with TFX's own BulkInferrer (the candidate's
`serving_examples` signature, only when the Evaluator blessed it; docs/pipeline.md, "Batch
scoring"). This component, on the pipeline's Beam runner, turns its PredictionLogs into the
files `sicot score` writes (`sicot.trainer.evaluation.batch_scoring`): `predictions.jsonl` (one line per
example: record_id, split, label, image-only top-k classes and scores), `.suspects.jsonl`
(image-only top-1 disagrees with the label at score >= suspect_min_score), `.duplicates.jsonl`
(records of different labels whose visual embeddings are near-identical), `.summary.json`.

Every example is accounted for: per split, the examples ExampleGen wrote must equal the
predictions, or the component fails naming the split; the rows ExampleGen quarantined are
counted from its artifact (`quarantined_<split>`), so records = examples + quarantined.
Custom properties of the output: scored, quarantined (by ExampleGen), suspects,
duplicate_pairs, pushed (whether the Pusher shipped this model), or skipped (the reason).
"""

import os

import apache_beam as beam
from tfx import v1 as tfx

PREDICTIONS_FILE = "predictions.jsonl"


def count_examples(examples_artifact, split: str) -> int:
    import tensorflow as tf
    from tfx.types import artifact_utils

    files = tf.io.gfile.glob(os.path.join(
        artifact_utils.get_split_uri([examples_artifact], split), "*"))
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))


@tfx.dsl.components.component(use_beam=True)
def ScoringReport(  # noqa: N802 - TFX component names are classes
    inference_result: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.InferenceResult],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    pushed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.PushedModel],
    report: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.InferenceResult],
    splits: tfx.dsl.components.Parameter[str] = "test",
    suspect_min_score: tfx.dsl.components.Parameter[float] = 0.5,
    duplicate_min_similarity: tfx.dsl.components.Parameter[float] = 0.98,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    import json

    import tensorflow as tf

    from sicot.trainer.evaluation import batch_scoring

    tf.io.gfile.makedirs(report.uri)
    files = batch_scoring.ScoringFiles(os.path.join(report.uri, PREDICTIONS_FILE))
    logs = tf.io.gfile.glob(os.path.join(inference_result.uri, "prediction_logs-*"))
    pushed = pushed_model.get_int_custom_property("pushed") == 1
    report.set_int_custom_property("pushed", int(pushed))
    if not logs:  # BulkInferrer skips a model the Evaluator did not bless
        reason = "no predictions: the Evaluator did not bless the model"
        report.set_string_custom_property("skipped", reason)
        with tf.io.gfile.GFile(files.summary, "w") as f:
            json.dump({"skipped": reason}, f)
        return
    config = batch_scoring.ScoringConfig(with_text=False, suspect_min_score=suspect_min_score,
                                         duplicate_min_similarity=duplicate_min_similarity)
    batch_scoring.run_beam_log_conversion(logs, files, config, beam_pipeline)
    chosen = [s.strip() for s in splits.split(",") if s.strip()]
    records = {s: count_examples(examples, s) for s in chosen}
    summary = batch_scoring.finish_reports(
        files, config, records, {"inference_result": inference_result.uri, "pushed": pushed})
    upstream = {s: examples.get_int_custom_property(f"quarantined_{s}") for s in chosen}
    summary["examplegen_quarantined"] = upstream
    with tf.io.gfile.GFile(files.summary, "w") as f:
        json.dump(summary, f, indent=2)
    report.set_int_custom_property("scored", int(summary["scored"]))
    report.set_int_custom_property("quarantined", int(sum(upstream.values())))
    report.set_int_custom_property("suspects", int(summary["suspects"]))
    report.set_int_custom_property("duplicate_pairs", int(summary["duplicate_pairs"]))
