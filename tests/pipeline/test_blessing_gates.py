"""The Evaluator's blessing gates, run by TFMA itself on models with known answers.

The pipeline's `_eval_config` is given to `tfma.run_model_analysis` with a candidate and a
baseline model the way TFX's Evaluator names them. The models are small tf.Modules with the
same signatures the SICoT export gives TFMA (`transform_features` -> label_xf, band_xf;
`eval_examples` -> image_only / image_text class probabilities); what they get right is set
by construction, so the expected gate outcome is known exactly:
  * a candidate equal to the baseline passes;
  * a candidate that gets the few-shot band wrong (a tail regression) fails the few-band
    top-1 and top-5 change gates and the overall gate of both query modes, and
    `run_summary.gate_failures` names each gate with the drop;
  * a candidate 1 example in 40 worse overall (2.5 points) on the many band alone passes
    with `max_overall_drop=0.05` and fails with the default 0.005.
"""
import os

import numpy as np
import pytest

from sicot import contract
from sicot.pipeline import configs, run_summary
from sicot.pipeline import pipeline as sicot_pipeline

pytestmark = pytest.mark.slow  # four TFMA runs on the DirectRunner: about 100 s on 2 cores

NUM_CLASSES = 10
# band per class: 0-3 many, 4-6 medium, 7-9 few; 4 test examples per class
BANDS = ["many"] * 4 + ["medium"] * 3 + ["few"] * 3
PER_CLASS = 4


def write_examples(path):
    import tensorflow as tf

    with tf.io.TFRecordWriter(path) as w:
        for c in range(NUM_CLASSES):
            for i in range(PER_CLASS):
                feats = {"label": tf.train.Feature(int64_list=tf.train.Int64List(value=[c])),
                         "band": tf.train.Feature(bytes_list=tf.train.BytesList(
                             value=[BANDS[c].encode()])),
                         "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))}
                w.write(tf.train.Example(features=tf.train.Features(feature=feats))
                        .SerializeToString())


def write_model(export_dir, wrong_bands=(), wrong_first_of_class=()):
    """A model right on every example except those of `wrong_bands` and the first example
    (index 0) of the classes in `wrong_first_of_class`, where the true class is ranked last."""
    import tensorflow as tf

    spec = {"label": tf.io.FixedLenFeature([], tf.int64),
            "band": tf.io.FixedLenFeature([], tf.string),
            "index": tf.io.FixedLenFeature([], tf.int64)}
    wrong_bands = tf.constant(list(wrong_bands) or [""], tf.string)
    wrong_classes = tf.constant(list(wrong_first_of_class) or [-1], tf.int64)

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def transform_features(self, examples):
            parsed = tf.io.parse_example(examples, spec)
            return {"label_xf": parsed["label"], "band_xf": parsed["band"]}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def eval_examples(self, examples):
            parsed = tf.io.parse_example(examples, spec)
            label = parsed["label"]
            wrong = tf.reduce_any(parsed["band"][:, None] == wrong_bands[None, :], axis=1)
            wrong |= (parsed["index"] == 0) & tf.reduce_any(
                label[:, None] == wrong_classes[None, :], axis=1)
            # distinct logits: the label first when right, last when wrong
            ranks = tf.cast((tf.range(NUM_CLASSES, dtype=tf.int64)[None, :] - label[:, None])
                            % NUM_CLASSES, tf.float32)  # 0 for the label, 1..C-1 the others
            logits = tf.where(wrong[:, None], ranks, -ranks)
            probs = tf.nn.softmax(logits, axis=-1)
            return {"image_only": probs, "image_text": probs}

    model = Model()
    tf.saved_model.save(model, export_dir, signatures={
        "eval_examples": model.eval_examples, "transform_features": model.transform_features})
    return export_dir


def evaluate(tmp_path, name, candidate_dir, baseline_dir, thresholds):
    """TFMA on the examples, candidate against baseline, as TFX's Evaluator sets it up."""
    import tensorflow_model_analysis as tfma

    eval_config = sicot_pipeline._eval_config(thresholds)
    spec = eval_config.model_specs[0]
    candidate, baseline = tfma.ModelSpec(), tfma.ModelSpec()
    candidate.CopyFrom(spec)
    candidate.name = "candidate"
    baseline.CopyFrom(spec)
    baseline.name, baseline.is_baseline = "baseline", True
    del eval_config.model_specs[:]
    eval_config.model_specs.extend([candidate, baseline])
    models = [tfma.default_eval_shared_model(eval_saved_model_path=path, model_name=model_name,
                                             eval_config=eval_config)
              for model_name, path in (("candidate", candidate_dir), ("baseline", baseline_dir))]
    out = str(tmp_path / name)
    tfma.run_model_analysis(eval_shared_model=models, eval_config=eval_config,
                            data_location=str(tmp_path / "examples.tfrecord"), output_path=out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate_models")
    write_examples(str(root / "examples.tfrecord"))
    return root, {
        "good": write_model(str(root / "good")),
        "tail_broken": write_model(str(root / "tail_broken"), wrong_bands=["few"]),
        "one_head_miss": write_model(str(root / "one_head_miss"), wrong_first_of_class=[0]),
    }


def test_equal_candidate_passes_every_gate(models):
    root, paths = models
    out = evaluate(root, "equal", paths["good"], paths["good"], configs.BlessingThresholds())
    assert run_summary.gate_failures(out) == []
    table = run_summary.band_metrics(out)
    assert table[("few", "image_only")] == {"top1": 1.0, "top5": 1.0, "count": 12.0}


def test_tail_regression_fails_the_named_gates_by_how_much(models):
    root, paths = models
    out = evaluate(root, "tail", paths["tail_broken"], paths["good"],
                   configs.BlessingThresholds())
    failures = run_summary.gate_failures(out)
    found = {(f.kind, f.slice, f.mode, f.metric): f for f in failures}
    for mode in contract.QUERY_MODES:
        for metric in ("top-1", "top-5"):
            f = found.pop(("change", "few", mode, metric))
            assert f.value == pytest.approx(-1.0) and f.limit == pytest.approx(-0.01)
            assert f.candidate == pytest.approx(0.0)
        f = found.pop(("change", "overall", mode, "top-1"))
        assert f.value == pytest.approx(-12 / 40) and f.limit == pytest.approx(-0.005)
    assert not found, found  # nothing on the many / medium bands, no overall top-5 gate
    text = run_summary.GateFailure("change", "few", "image_only", "top-1", -1.0, -0.01,
                                   0.0).describe()
    assert "gate 'few image_only top-1 change' failed" in text
    assert "100.00 points lost where at most 1.00 may be" in text
    assert "baseline 1.0000" in text


def test_overall_drop_limit_is_configurable(models):
    root, paths = models
    # one many-band example in 40 wrong: -2.5 points overall, nothing on the few band
    loose = evaluate(root, "loose", paths["one_head_miss"], paths["good"],
                     configs.BlessingThresholds(max_overall_drop=0.05))
    assert run_summary.gate_failures(loose) == []
    strict = evaluate(root, "strict", paths["one_head_miss"], paths["good"],
                      configs.BlessingThresholds())
    failures = run_summary.gate_failures(strict)
    assert sorted((f.slice, f.mode, f.metric) for f in failures) == [
        ("overall", "image_only", "top-1"), ("overall", "image_text", "top-1")]
    assert failures[0].value == pytest.approx(-0.025)
    assert os.path.isdir(strict)
    assert np.isclose(failures[0].candidate, 39 / 40)
