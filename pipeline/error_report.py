"""`ErrorReport`: the error-analysis page of a pipeline run (after the Evaluator).

Runs `sicot.trainer.evaluation.error_analysis` on the candidate: the raw test split through its
serving signatures (image only, image + title/tags), training counts per class from the
Transform's `label_counts` vocabulary, TFMA's confusion matrix from the Evaluator's own output
(the Evaluator computes `MultiClassConfusionMatrixPlot` on the image-only output). Writes
`report.html` (band table, accuracy against training count PNG, most confused class pairs
with thumbnails, TFMA confusion cells) into its `ErrorAnalysisReport` artifact, for blessed
and refused candidates alike: a refused one is where a person wants to look.
"""

import os

from tfx import v1 as tfx


class ErrorAnalysisReport(tfx.dsl.Artifact):
    """A folder holding report.html and its images."""

    TYPE_NAME = "sicot.ErrorAnalysisReport"  # KFP schema title form: namespace.Name


@tfx.dsl.components.component
def ErrorReport(  # noqa: N802 - TFX component names are classes
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    evaluation: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    transform_graph: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.TransformGraph],
    report: tfx.dsl.components.OutputArtifact[ErrorAnalysisReport],
    split: tfx.dsl.components.Parameter[str] = "test",
    band_edges: tfx.dsl.components.Parameter[str] = "",
) -> None:
    import tensorflow as tf
    from tensorflow_model_analysis.writers import eval_config_writer
    from tfx.types import artifact_utils

    from sicot.pipeline.canary import read_records
    from sicot.trainer.evaluation import error_analysis
    from sicot.trainer.evaluation.band_accuracy import evaluate_records
    from sicot.trainer.transform.preprocessing import TransformConfig

    edges = (tuple(int(v) for v in band_edges.split(",")) if band_edges
             else TransformConfig().band_edges)
    model_dir = artifact_utils.get_single_uri([model])
    if tf.io.gfile.exists(os.path.join(model_dir, "Format-Serving", "saved_model.pb")):
        model_dir = os.path.join(model_dir, "Format-Serving")
    records = read_records(examples, [split], limit=None)
    # Bands and training counts come from the model's own Transform; the edges are shown.
    try:
        fields, predictions = evaluate_records(model_dir, records)
    except tf.errors.OpError as e:
        # A candidate whose serving signatures fail gets a page saying so instead of a failed
        # run: the report is diagnostics, the Canary is what refuses such a model, and a
        # failure here would stop LocalDagRunner before the Canary's verdict is recorded.
        page = _write_failure_page(report.uri, model_dir, split, e)
        report.set_string_custom_property("page", page)
        report.set_string_custom_property("error", f"{type(e).__name__}: {e.message[:500]}")
        return
    fields.update(saved_model=model_dir, data=examples.uri, split=split, band_edges=list(edges))
    _, _, _, locations = eval_config_writer.load_eval_run(evaluation.uri)
    confusion = error_analysis.confusion_from_eval_result(
        evaluation.uri, error_analysis.class_names_of(model_dir),
        model_name="candidate" if "candidate" in (locations or {}) else None)
    error_analysis.write_report(report.uri, fields, records, predictions, confusion)
    report.set_string_custom_property("page", os.path.join(report.uri,
                                                           error_analysis.REPORT_HTML))


def _write_failure_page(out_dir: str, model_dir: str, split: str, error) -> str:
    import html

    import tensorflow as tf

    from sicot.trainer.evaluation import error_analysis

    tf.io.gfile.makedirs(out_dir)
    path = os.path.join(out_dir, error_analysis.REPORT_HTML)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("<!DOCTYPE html><html><head><meta charset='utf-8'><title>SICoT error analysis"
                "</title></head><body><h1>SICoT error analysis</h1>"
                f"<p id='failure'>The serving signatures of <code>{html.escape(model_dir)}</code> "
                f"failed on the {html.escape(split)} split, so there is no analysis: "
                f"<code>{html.escape(type(error).__name__)}: "
                f"{html.escape(error.message[:2000])}</code></p></body></html>")
    return path
