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
    assert "split 'train'" not in message, message

    runs = run_summary.latest_run(local_runner.metadata_path(root), "sicot")
    assert runs["ExampleValidator"].state == "COMPLETE"
    assert runs["ValidationGate"].state == "FAILED"
    for later in ("Transform", "Trainer", "Evaluator", "Pusher"):
        assert later not in runs, f"{later} ran after a failed validation"
    assert not os.path.exists(serving) or not os.listdir(serving)
