"""Schema drift in a split is caught by validation and stops the run before Transform.

Kinds of drift (tests/pipeline/test_validation_gate.py covers missing labels):
  * a feature missing from a split (no `title` in test),
  * a type change (`image` written as int64 values in test),
  * a new label in test that the training split never had (curated schema: caught by
    UnseenLabelValidator, which reads the labels from the examples, see
    tests/pipeline/test_unseen_label_validator.py for 1,200 classes and the allow option;
    inferred schema: also by ExampleValidator, as the label gets a string domain from train),
  * an extra, unknown feature in test.
Real components through LocalDagRunner (ImportExampleGen, StatisticsGen, ImportSchemaGen or
SchemaGen, ExampleValidator, UnseenLabelValidator, ValidationGate) with SQLite MLMD; the data
is a few dozen rows (about 30 s per case on 2 busy cores).
"""
from __future__ import annotations

import os

import pytest

from sicot.pipeline import configs, local_runner, run_summary

TRAIN_COUNTS = [6, 4, 3]


def write_drifted_dataset(root, datasets, drift: str) -> str:
    """Imported TFRecords: a clean train split and a test split with one kind of drift."""
    import tensorflow as tf

    os.makedirs(root, exist_ok=True)
    for split, per_class in (("train", TRAIN_COUNTS), ("test", [2] * len(TRAIN_COUNTS))):
        path = os.path.join(root, f"{split}-00000-of-00001.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for c, n in enumerate(per_class):
                for i in range(n):
                    feats = {
                        "image": datasets.image_bytes(c, seed=c * 1000 + i),
                        "title": f"colour{c} box".encode(),
                        "tags": b"sale",
                        "label": f"class-{c:02d}".encode(),
                        "record_id": f"{split}.jsonl:{c * 100 + i}".encode(),
                    }
                    feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
                               for k, v in feats.items()}
                    if split == "test":
                        if drift == "missing_feature":
                            del feature["title"]
                        elif drift == "type_change":
                            feature["image"] = tf.train.Feature(
                                int64_list=tf.train.Int64List(value=[c, i]))
                        elif drift == "new_label" and c == 0:
                            feature["label"] = tf.train.Feature(
                                bytes_list=tf.train.BytesList(value=[b"class-never-trained"]))
                        elif drift == "extra_feature":
                            feature["price"] = tf.train.Feature(
                                float_list=tf.train.FloatList(value=[9.99]))
                    writer.write(tf.train.Example(
                        features=tf.train.Features(feature=feature)).SerializeToString())
    return str(root)


def run_until_validation(tmp_path, data, schema, stop_after="transform"):
    root, serving = str(tmp_path / "root"), str(tmp_path / "serving")
    failure = None
    try:
        local_runner.run_local(
            data_root=data, pipeline_root=root, serving_dir=serving,
            schema_path=configs.CURATED_SCHEMA if schema == "curated" else None,
            stop_after=stop_after, model_config={"epochs": 1},
            beam_pipeline_args=configs.beam_pipeline_args("direct"))
    except Exception as e:  # noqa: BLE001 - the test inspects it
        failure = e
    return failure, run_summary.latest_run(local_runner.metadata_path(root), "sicot")


# (drift, schema, the words the gate's message must hold for split 'test')
CAUGHT = [
    ("missing_feature", "curated", "feature 'title'"),
    ("missing_feature", "inferred", "feature 'title'"),
    ("type_change", "curated", "feature 'image'"),
    ("new_label", "curated", "feature 'label': Labels not in the train split"),
    ("new_label", "inferred", "feature 'label': Unexpected string values"),
    ("extra_feature", "curated", "feature 'price'"),
]


@pytest.mark.parametrize("drift,schema,named", CAUGHT, ids=[f"{d}-{s}" for d, s, _ in CAUGHT])
def test_drift_stops_the_run_before_transform(tmp_path, datasets, drift, schema, named):
    data = write_drifted_dataset(tmp_path / "data", datasets, drift)
    failure, runs = run_until_validation(tmp_path, data, schema)
    assert failure is not None, f"{drift} with the {schema} schema was not caught"
    message = str(failure)
    assert "data validation failed" in message, message
    assert f"split 'test': {named}" in message, message
    assert "split 'train'" not in message, message
    if drift == "new_label":
        assert "class-never-trained" in message, message
    assert runs["ExampleValidator"].state == "COMPLETE"
    assert runs["ValidationGate"].state == "FAILED"
    assert "Transform" not in runs, "Transform ran after a failed validation"


@pytest.mark.parametrize("schema", ["curated", "inferred"])
def test_clean_data_passes_the_gate(tmp_path, datasets, schema):
    """The control: the same data without drift passes the gate, with either schema (so the
    failures above come from the drift, not from the setup). With the inferred schema this
    needs pipeline/schema_curation.py: tfdv gives record_id (few distinct values here) a
    domain, and every new record id of the test split was an anomaly."""
    data = write_drifted_dataset(tmp_path / "data", datasets, "none")
    failure, runs = run_until_validation(tmp_path, data, schema, stop_after="validation")
    assert failure is None, failure
    assert runs["ValidationGate"].state == "COMPLETE"
