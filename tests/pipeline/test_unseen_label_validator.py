"""Labels in eval/test that the train split never has stop the run at the ValidationGate
(default curated schema), unless the split is allowed.

The end-to-end cases use 1,200 training classes, more than the 1,000 values a TFDV rank
histogram keeps, with the new labels among the rarest: real components (ImportExampleGen,
StatisticsGen, ImportSchemaGen, ExampleValidator, UnseenLabelValidator, ValidationGate)
through LocalDagRunner with SQLite MLMD, about 30 s each.
"""
from __future__ import annotations

import os

import pytest

from sicot.pipeline import local_runner, run_summary

NUM_CLASSES = 1200
UNSEEN_IN_EVAL = [b"new-a", b"new-a", b"new-b", b"new-c"]


def _example(label, image, record_id):
    import tensorflow as tf

    feats = {"image": image, "title": b"red box", "tags": b"sale", "record_id": record_id}
    if label is not None:
        feats["label"] = label
    return tf.train.Example(features=tf.train.Features(feature={
        k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
        for k, v in feats.items()})).SerializeToString()


def write_dataset(root, image, num_classes=NUM_CLASSES) -> str:
    """Imported TFRecords: train with one example of each of num_classes classes; eval with
    every train class once plus UNSEEN_IN_EVAL; test with up to 30 train classes."""
    import tensorflow as tf

    seen = [f"class-{c:04d}".encode() for c in range(num_classes)]
    labels = {"train": seen, "eval": seen + UNSEEN_IN_EVAL, "test": seen[:30]}
    os.makedirs(root, exist_ok=True)
    for split, split_labels in labels.items():
        path = os.path.join(root, f"{split}-00000-of-00001.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for i, label in enumerate(split_labels):
                writer.write(_example(label, image, f"{split}.jsonl:{i}".encode()))
    return str(root)


def run_until_validation(tmp_path, data, **settings):
    from sicot.pipeline import configs

    root = str(tmp_path / "root")
    failure = None
    try:
        local_runner.run_local(
            data_root=data, pipeline_root=root, serving_dir=str(tmp_path / "serving"),
            model_config={"epochs": 1}, beam_pipeline_args=configs.beam_pipeline_args("direct"),
            **settings)
    except Exception as e:  # noqa: BLE001 - the test inspects it
        failure = e
    return failure, run_summary.latest_run(local_runner.metadata_path(root), "sicot")


def test_find_unseen_labels_counts_examples_and_names_the_commonest():
    """The Beam transform alone: counts, the commonest unseen labels first (ties by name),
    examples without a label ignored, and a clean split reported as clean."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from sicot.pipeline.unseen_label_validator import FindUnseenLabels

    train = [_example(label, b"x", b"r") for label in (b"a", b"b", b"c", b"a")]
    eval_labels = [b"a", b"z", b"y", b"z", b"x", b"w", b"w", b"z", None, "caf\u00e9".encode()]
    eval_ = [_example(label, b"x", b"r") for label in eval_labels]
    test = [_example(label, b"x", b"r") for label in (b"b", b"c")]
    with TestPipeline() as p:
        inputs = {name: p | name >> beam.Create(rows)
                  for name, rows in (("train", train), ("eval", eval_), ("test", test))}
        reports = inputs | FindUnseenLabels(["eval", "test"], max_named=3)
        assert_that(reports["eval"], equal_to([{
            "examples": 10, "unseen_labels": 5, "unseen_examples": 8,
            "commonest": [["z", 3], ["w", 2], ["caf\u00e9", 1]]}]), label="eval")
        assert_that(reports["test"], equal_to([{
            "examples": 2, "unseen_labels": 0, "unseen_examples": 0, "commonest": []}]),
            label="test")


def test_unseen_eval_labels_stop_the_run_before_transform(tmp_path, datasets):
    data = write_dataset(tmp_path / "data", datasets.image_bytes(0, seed=0))
    failure, runs = run_until_validation(tmp_path, data)  # default settings: curated schema
    assert failure is not None, "labels never seen in train passed validation"
    message = str(failure)
    assert "data validation failed with 1 anomaly;" in message, message
    assert ("split 'eval': feature 'label': Labels not in the train split (4 of 1204 "
            "examples have 3 label values that the train split never has: 'new-a' (2), "
            "'new-b' (1), 'new-c' (1); if they are expected, allow them with "
            "--allow-unseen-labels eval)") in message, message
    assert "split 'test'" not in message and "split 'train'" not in message, message
    assert runs["ExampleValidator"].state == "COMPLETE"
    assert runs["UnseenLabelValidator"].state == "COMPLETE"
    assert runs["ValidationGate"].state == "FAILED"
    assert "Transform" not in runs, "Transform ran after a failed validation"


@pytest.mark.parametrize("schema,num_classes", [("curated", NUM_CLASSES), ("inferred", 12)])
def test_allowed_split_with_unseen_labels_passes_the_gate(tmp_path, datasets, schema,
                                                          num_classes):
    """The control, and the option: the same data passes when eval may hold new labels. With
    12 classes SchemaGen infers a label domain, which the option must drop as well."""
    from sicot.pipeline import configs

    data = write_dataset(tmp_path / "data", datasets.image_bytes(0, seed=0), num_classes)
    failure, runs = run_until_validation(
        tmp_path, data, allow_unseen_labels=["eval"], stop_after="validation",
        schema_path=configs.CURATED_SCHEMA if schema == "curated" else None)
    assert failure is None, failure
    assert runs["UnseenLabelValidator"].state == "COMPLETE"
    assert runs["ValidationGate"].state == "COMPLETE"


def test_unknown_split_in_allow_unseen_labels_is_refused(tmp_path):
    from sicot.pipeline import pipeline as sicot_pipeline

    with pytest.raises(ValueError, match=r"unknown split\(s\) \['evel'\]"):
        sicot_pipeline.create_pipeline(pipeline_root=str(tmp_path), data_root=str(tmp_path),
                                       serving_dir=str(tmp_path), allow_unseen_labels=["evel"])
