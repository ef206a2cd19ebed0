"""ManifestExampleGen on a tiny dataset folder with bad rows, through LocalDagRunner with the
Beam DirectRunner and SQLite MLMD: every record ends up in the examples or in quarantine."""
import collections
import glob
import json
import os

import pytest
import tensorflow as tf

from sicot.pipeline import local_runner, run_summary
from sicot.pipeline.manifest_example_gen import ManifestExampleGen
from sicot.pipeline.manifest_example_gen_executor import QUARANTINE_FILE

BAD_TRAIN_ROWS = [
    '{"image": "images/nope.jpg", "title": "lost", "tags": [], "label": "class-00"}',
    '{"image": "images/train_0_0.jpg", "title": "no label", "label": "   "}',
    '{this is not json',
]
BAD_TEST_ROWS = ['{"title": "no image", "label": "class-01"}']


def _run_example_gen(tmp_path, data, import_config, name="eg"):
    from tfx import v1 as tfx

    root = str(tmp_path / name)
    example_gen = ManifestExampleGen(
        input_base=data,
        split_files={"train": "train.jsonl", "eval": "eval.jsonl", "test": "test.jsonl"},
        import_config=import_config)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name=name, pipeline_root=root, components=[example_gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            local_runner.metadata_path(root)),
        beam_pipeline_args=["--direct_num_workers=1"])
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return run_summary.latest_run(local_runner.metadata_path(root), name)["ManifestExampleGen"]


def _count_records(split_dir):
    files = glob.glob(os.path.join(split_dir, "*.gz"))
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))


def test_counts_and_quarantine_reasons_add_up(tmp_path, datasets):
    data = datasets.write_manifest_dataset(
        tmp_path / "data", train_counts=[8, 5, 3], per_class_test=2, per_class_eval=1,
        bad_rows={"train": BAD_TRAIN_ROWS, "test": BAD_TEST_ROWS})
    run = _run_example_gen(tmp_path, data, {"max_bad_fraction": 0.5})
    assert run.state == "COMPLETE"
    uri = run.outputs["examples"][0]

    expected_good = {"train": 16, "eval": 3, "test": 6}
    expected_bad = {"train": 3, "eval": 0, "test": 1}
    for split in expected_good:
        assert _count_records(os.path.join(uri, f"Split-{split}")) == expected_good[split]
        assert run.properties["examples"][f"examples_{split}"] == expected_good[split]
        assert run.properties["examples"][f"quarantined_{split}"] == expected_bad[split]

    with open(os.path.join(uri, QUARANTINE_FILE)) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    by_split = collections.Counter(e["split"] for e in entries)
    assert dict(by_split) == {"train": 3, "test": 1}
    reasons = {e["source"]: e["reason"].split(":")[0] for e in entries}
    assert reasons == {"train.jsonl:17": "missing_image", "train.jsonl:18": "empty_label",
                       "train.jsonl:19": "bad_json", "test.jsonl:7": "missing_field"}, reasons
    # the raw record is kept so that nothing is lost
    assert {e["record"] for e in entries} == set(BAD_TRAIN_ROWS + BAD_TEST_ROWS)

    # the examples carry the contract's features
    files = glob.glob(os.path.join(uri, "Split-train", "*.gz"))
    record = next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP")))
    example = tf.train.Example.FromString(record.numpy())
    assert set(example.features.feature) == {"image", "title", "tags", "label", "record_id"}


def test_too_many_bad_rows_fail_with_a_clear_message(tmp_path, datasets):
    data = datasets.write_manifest_dataset(
        tmp_path / "data", train_counts=[4, 3], bad_rows={"train": BAD_TRAIN_ROWS})
    with pytest.raises(Exception) as failure:
        _run_example_gen(tmp_path, data, {"max_bad_fraction": 0.05})
    message = str(failure.value)
    assert "split 'train'" in message and "train.jsonl" in message, message
    assert "3 of 10 records quarantined (30.0% > max_bad_fraction 5.0%)" in message, message
    assert "bad_json x1" in message and "missing_image x1" in message, message
    # the quarantine file named in the message is on disk
    path = message.rsplit(" is in ", 1)[1].strip()
    assert path.endswith(QUARANTINE_FILE) and os.path.isfile(path), path


def test_csv_manifests_without_eval(tmp_path, datasets):
    import csv

    data = tmp_path / "csvdata"
    (data / "images").mkdir(parents=True)
    for split, n in (("train", 5), ("test", 2)):
        with open(data / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "title", "tags", "label"])
            for i in range(n):
                name = f"images/{split}{i}.png"
                (data / name).write_bytes(datasets.image_bytes(i % 2, seed=i, fmt="PNG"))
                w.writerow([name, f"mug {i}", "red|ceramic", f"class-{i % 2}"])
            if split == "train":
                w.writerow(["images/missing.png", "gone", "", "class-0"])
    from sicot.pipeline import pipeline as sicot_pipeline

    layout = sicot_pipeline.detect_dataset_layout(str(data))
    assert layout.split_files == {"train": "train.csv", "test": "test.csv"}

    from tfx import v1 as tfx

    root = str(tmp_path / "root")
    example_gen = ManifestExampleGen(input_base=str(data), split_files=layout.split_files,
                                     import_config={"max_bad_fraction": 0.5})
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="csv", pipeline_root=root, components=[example_gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            local_runner.metadata_path(root))))
    run = run_summary.latest_run(local_runner.metadata_path(root), "csv")["ManifestExampleGen"]
    uri = run.outputs["examples"][0]
    assert _count_records(os.path.join(uri, "Split-train")) == 5
    assert _count_records(os.path.join(uri, "Split-test")) == 2
    with open(os.path.join(uri, QUARANTINE_FILE)) as f:
        (entry,) = [json.loads(line) for line in f if line.strip()]
    assert entry["source"] == "train.csv:7" and entry["reason"].startswith("missing_image")
    files = glob.glob(os.path.join(uri, "Split-train", "*.gz"))
    tags = {tf.train.Example.FromString(r.numpy()).features.feature["tags"].bytes_list.value[0]
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")}
    assert tags == {b"red|ceramic"}
