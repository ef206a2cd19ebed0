"""A dataset whose test split lacks labels is stopped at validation: no Transform, no
Trainer, nothing pushed. Real components: ImportExampleGen, StatisticsGen, ImportSchemaGen /
SchemaGen, ExampleValidator and the gate, through LocalDagRunner with SQLite MLMD."""
import os

import pytest

from sicot.pipeline import local_runner, run_summary


@pytest.mark.parametrize("schema", ["curated", "inferred"])
def test_missing_labels_in_test_split_stop_the_run(tmp_path, datasets, schema):
    from sicot.pipeline import configs

    data = datasets.write_tfrecord_dataset(tmp_path / "data", train_counts=[6, 4, 3],
                                           drop_label_in=("test",))
    root, serving = str(tmp_path / "root"), str(tmp_path / "serving")
    with pytest.raises(Exception) as failure:
        local_runner.run_local(
            data_root=data, pipeline_root=root, serving_dir=serving,
            schema_path=configs.CURATED_SCHEMA if schema == "curated" else None,
            model_config={"epochs": 1})
    message = str(failure.value)
    # the gate's message names the split, the feature and what is wrong
    assert "data validation failed" in message, message
    assert "split 'test': feature 'label'" in message, message
    # only the label: new record ids / titles in test are no anomaly (CurateInferredSchema)
    assert "failed with 1 anomaly;" in message, message
    assert "split 'train'" not in message, message

    runs = run_summary.latest_run(local_runner.metadata_path(root), "sicot")
    assert runs["ExampleValidator"].state == "COMPLETE"
    assert runs["ValidationGate"].state == "FAILED"
    for later in ("Transform", "Trainer", "Evaluator", "Pusher"):
        assert later not in runs, f"{later} ran after a failed validation"
    assert not os.path.exists(serving) or not os.listdir(serving)


def test_curation_drops_free_text_domains_only():
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    from sicot.pipeline.schema_curation import drop_free_text_domains

    schema = text_format.Parse("""
        feature { name: "title" type: BYTES domain: "title" }
        feature { name: "label" type: BYTES domain: "label" }
        feature { name: "record_id" type: BYTES domain: "record_id" }
        feature { name: "image" type: BYTES }
        string_domain { name: "label" value: "class-00" }
        string_domain { name: "record_id" value: "train.jsonl:1" }
        string_domain { name: "title" value: "red mug" }
    """, schema_pb2.Schema())
    curated = drop_free_text_domains(schema)
    assert [d.name for d in curated.string_domain] == ["label"]
    by_name = {f.name: f for f in curated.feature}
    assert by_name["label"].domain == "label"
    assert not by_name["title"].HasField("domain")
    assert not by_name["record_id"].HasField("domain")
    # allow_unseen_labels: the label's inferred domain goes too
    curated = drop_free_text_domains(schema, keep_label_domain=False)
    assert not curated.string_domain
    assert not any(f.HasField("domain") for f in curated.feature)
