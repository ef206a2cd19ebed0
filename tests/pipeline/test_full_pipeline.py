"""The whole pipeline on a tiny generated dataset with the real components (slow, ~6 min on
2 busy cores): a Trainer failure, the resumed run (upstream outputs reused from the cache),
and an unchanged re-run (everything up to the Trainer cached; the Evaluator re-runs because
the baseline is now the model blessed by the previous run)."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from sicot import cli, contract
from sicot.pipeline import configs, local_runner, run_summary
from sicot.trainer import options

pytestmark = pytest.mark.slow

# few < 4 <= medium <= 10 < many: all three bands exist in 98 training images.
TRAIN_COUNTS = [14, 12, 10, 8, 6, 5, 4, 3, 3, 2]
UPSTREAM = ["ManifestExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
            "ValidationGate", "Transform"]


def test_pipeline_end_to_end_with_resume_and_cache(tmp_path, datasets, capsys):
    data = datasets.write_manifest_dataset(tmp_path / "data", TRAIN_COUNTS, per_class_test=2,
                                           per_class_eval=1)
    root, serving = str(tmp_path / "root"), str(tmp_path / "serving")
    mlmd = local_runner.metadata_path(root)
    cli_args = ["run", "--data", data, "--pipeline-root", root, "--serving-dir", serving,
                "--epochs", "1", "--image-size", "32", "--band-edges", "4,10"]

    # 1. The Trainer fails (a model setting nothing knows): upstream components completed.
    # The configs come from the same options path as `sicot run` below, so the Transform's
    # settings are identical and the resumed run can reuse its cached output.
    transform, model = options.configs_from_options("sicot", epochs=1, image_size=32,
                                                    band_edges="4,10")
    with pytest.raises(Exception, match="no_such_setting"):
        local_runner.run_local(
            data_root=data, pipeline_root=root, serving_dir=serving,
            model_config={**model.to_dict(), "no_such_setting": 1},
            transform_config=transform.to_dict(),
            schema_path=configs.CURATED_SCHEMA, import_config={},
            thresholds=configs.BlessingThresholds())
    runs = run_summary.latest_run(mlmd, "sicot")
    assert {n: runs[n].state for n in UPSTREAM} == {n: "COMPLETE" for n in UPSTREAM}
    assert runs["Trainer"].state == "FAILED"
    assert "Pusher" not in runs and not os.path.exists(serving)

    # 2. Fixed: `sicot run` resumes at the Trainer, reusing the cached upstream outputs.
    assert cli.main(cli_args) == 0
    printed = capsys.readouterr().out
    runs = run_summary.latest_run(mlmd, "sicot")
    assert {n: runs[n].state for n in UPSTREAM} == {n: "CACHED" for n in UPSTREAM}
    for node in ("Trainer", "Evaluator", "ErrorReport", "Canary", "Pusher"):
        assert runs[node].state == "COMPLETE", (node, runs[node].state)

    # schema: the curated one, requiring label
    schema_dir = runs["ImportSchemaGen"].outputs["schema"][0]
    assert 'name: "label"' in open(os.path.join(schema_dir, "schema.pbtxt")).read()
    # transformed examples with the contract's features, for every split
    xf_uri = runs["Transform"].outputs["transformed_examples"][0]
    for split, n in (("train", sum(TRAIN_COUNTS)), ("eval", 10), ("test", 20)):
        files = glob.glob(os.path.join(xf_uri, f"Split-{split}", "*.gz"))
        records = list(tf.data.TFRecordDataset(files, compression_type="GZIP"))
        assert len(records) == n, split
    example = tf.train.Example.FromString(records[0].numpy())
    assert {"image_xf", "tokens_xf", "label_xf", "band_xf"} <= set(example.features.feature)
    (stored,) = example.features.feature["image_xf"].bytes_list.value  # compact JPEG
    assert stored[:2] == b"\xff\xd8" and tf.io.decode_jpeg(stored).shape[2] == 3

    # TensorBoard event files in the ModelRun artifact, and the run printed where
    model_run = runs["Trainer"].outputs["model_run"][0]
    assert glob.glob(os.path.join(model_run, "**", "events.out.tfevents*"), recursive=True)
    assert f"tensorboard --logdir {model_run}" in printed

    # TFMA metrics per band for both query modes; band counts add up to the overall count
    assert runs["Evaluator"].properties["blessing"]["blessed"] == 1
    table = run_summary.band_metrics(runs["Evaluator"].outputs["evaluation"][0])
    for mode in contract.QUERY_MODES:
        assert table[("overall", mode)]["count"] == 20
        assert sum(table[(b, mode)]["count"] for b in ("many", "medium", "few")) == 20
        for band in ("overall", "many", "medium", "few"):
            assert 0.0 <= table[(band, mode)]["top1"] <= table[(band, mode)]["top5"] <= 1.0
    assert table[("few", "image_only")]["count"] == 3 * 2  # 3 classes with < 4 images
    assert "few      image_only" in printed and "blessed: yes" in printed
    # the canary served the blessed candidate on loopback and every signature answered
    canary = runs["Canary"].properties["blessing"]
    assert runs["Canary"].state == "COMPLETE" and canary["blessed"] == 1, canary
    assert "Canary: passed" in printed

    # the pushed version (TF Serving layout) loads and answers through serving_default
    versions = os.listdir(serving)
    assert len(versions) == 1 and versions[0].isdigit()
    assert f"Pushed model: {os.path.join(serving, versions[0])}" in printed
    import tensorflow_text  # noqa: F401 - registers the ops of the TFT layer

    model = tf.saved_model.load(os.path.join(serving, versions[0]))
    images = [datasets.image_bytes(c, seed=99) for c in range(3)]
    out = model.signatures["serving_default"](image=tf.constant(images))
    classes = out["classes"].numpy()
    assert classes.shape == (3, 5)
    assert {c.decode() for c in classes.ravel()} <= {f"class-{c:02d}" for c in range(10)}
    scores = out["scores"].numpy()
    assert np.all(scores >= 0) and np.all(np.diff(scores, axis=1) <= 1e-6)

    # 3. Unchanged re-run: everything up to the Trainer comes from the cache.
    assert cli.main(cli_args) == 0
    runs = run_summary.latest_run(mlmd, "sicot")
    for node in UPSTREAM + ["Trainer"]:
        assert runs[node].state == "CACHED", (node, runs[node].state)
    # the Evaluator compared against the baseline (the model blessed in step 2: itself)
    assert runs["Evaluator"].state == "COMPLETE"
    assert runs["Evaluator"].properties["blessing"]["blessed"] == 1
    from tensorflow_model_analysis.writers import eval_config_writer

    _, _, _, models = eval_config_writer.load_eval_run(runs["Evaluator"].outputs["evaluation"][0])
    assert set(models) == {"candidate", "baseline"}, models
