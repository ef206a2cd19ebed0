"""Release safety end to end (slow, real components): the blessing gates and the canary decide
what the Pusher ships, and what was serving keeps serving when they refuse.

1. A good candidate (`ce`, 20 epochs: 100 % on this data) is blessed by the Evaluator (no
   baseline yet), passes the canary and is pushed; BulkInferrer + ScoringReport score the test
   split with it, every example accounted for.
2. A deliberately worse candidate (`ce`, one epoch) is not blessed: the run summary names the failed
   gate and the drop; the canary does not serve it; nothing is pushed.
3. A candidate whose serving signatures fail (its image-only and image + text signatures cut
   the image bytes: a serving-only input path broken, while the Evaluator's path is intact) is
   blessed by loose gates but refused by the canary; nothing is pushed, and a `sicot serve`
   server started on the serving directory before the run still serves version 1 afterwards.
4. `sicot score` with the pushed model on the data plus a planted mislabelled record (a
   class-00 photo listed as class-07) and a record whose image is missing: every record is
   scored or quarantined, and the planted record is the top suspect.
"""
import os
import re
import textwrap
import time

import pytest

from sicot import cli
from sicot.pipeline import configs, local_runner, run_summary

pytestmark = pytest.mark.slow

TRAIN_COUNTS = [14, 12, 10, 8, 6, 5, 4, 3, 3, 2]

BROKEN_SERVING_TRAINER = '''
"""run_fn that trains normally but exports serving signatures that cut the image bytes."""
import tensorflow as tf

from sicot.trainer.export import saved_model as export
from sicot.trainer import task


def run_fn(fn_args):
    original = export._raw_from_strings

    def broken(values, raw_feature_spec):
        values = dict(values)
        values["image"] = tf.strings.substr(values["image"], 0, 8)  # header only: undecodable
        return original(values, raw_feature_spec)

    export._raw_from_strings = broken
    try:
        return task.run_fn(fn_args)
    finally:
        export._raw_from_strings = original
'''


def test_gates_and_canary_decide_what_is_pushed(tmp_path, datasets, capsys, monkeypatch,
                                                chromium):
    data = datasets.write_manifest_dataset(tmp_path / "data", TRAIN_COUNTS, per_class_test=2,
                                           per_class_eval=1)
    root, serving = str(tmp_path / "root"), str(tmp_path / "serving")
    mlmd = local_runner.metadata_path(root)
    base_args = ["run", "--data", data, "--pipeline-root", root, "--serving-dir", serving,
                 "--image-size", "32", "--band-edges", "4,10", "--canary-requests", "5",
                 "--model", "ce"]

    # 1. good candidate: blessed, canary passed, pushed
    assert cli.main(base_args + ["--epochs", "20", "--score-splits", "test"]) == 0
    printed = capsys.readouterr().out
    runs = run_summary.latest_run(mlmd, "sicot")
    assert runs["Evaluator"].properties["blessing"]["blessed"] == 1
    assert runs["Canary"].properties["blessing"]["blessed"] == 1, \
        runs["Canary"].properties["blessing"]
    assert "Canary: passed" in printed
    versions = os.listdir(serving)
    assert len(versions) == 1
    good = run_summary.band_metrics(runs["Evaluator"].outputs["evaluation"][0])
    print("good candidate:", good)
    # the figures docs/reliability.md quotes ("Release gates and canary")
    with open(os.path.join(runs["Canary"].outputs["blessing"][0], "canary_report.json")) as f:
        print("good candidate canary report:", f.read())
    # the error-analysis page of the run, rendered in headless Chromium
    page = runs["ErrorReport"].properties["report"]["page"]
    assert f"Error analysis: {page}" in printed
    dom, _ = chromium.render(page, tmp_path)
    text = " ".join(re.sub(r"<[^>]+>", " ", dom).split())
    assert "image_only few 6" in text and "images shown:" in text
    shown, total = map(int, re.search(r"images shown: (\d+) of (\d+)", text).groups())
    assert shown == total >= 1
    assert "MultiClassConfusionMatrixPlot: 20 examples" in text
    assert runs["BulkInferrer"].state == "COMPLETE"
    scorer = runs["ScoringReport"].properties["report"]
    assert (scorer["scored"], scorer["quarantined"], scorer["pushed"]) == (20, 0, 1), scorer
    assert "Batch scoring (pushed model): 20 scored, 0 quarantined" in printed

    # 2. worse candidate: not blessed, the gate named with the drop, not served, not pushed
    assert cli.main(base_args + ["--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    runs = run_summary.latest_run(mlmd, "sicot")
    assert runs["Trainer"].state == "COMPLETE"
    assert runs["Evaluator"].properties["blessing"]["blessed"] == 0
    failures = run_summary.gate_failures(runs["Evaluator"].outputs["evaluation"][0])
    assert failures and all(f.kind == "change" for f in failures), failures
    print("worse candidate gates:", [f.describe() for f in failures])
    for f in failures:
        assert f"NOT BLESSED: {f.describe()}" in printed
    assert "gate 'overall image_only top-1 change' failed" in printed or \
        "gate 'few image_only top-1 change' failed" in printed, printed
    assert runs["Canary"].properties["blessing"]["blessed"] == 0
    assert "the Evaluator did not bless" in runs["Canary"].properties["blessing"]["reason"]
    assert runs["Pusher"].properties["pushed_model"].get("pushed") != 1
    assert "Not pushed (model not blessed)" in printed
    assert os.listdir(serving) == versions

    # 3. serving signatures broken: blessed by loose gates, refused by the canary; the server
    #    that serves version 1 keeps serving it
    from sicot.serving.client import GrpcClient
    from sicot.serving.server import ModelServer, ServerOptions

    (tmp_path / "trainers").mkdir()
    (tmp_path / "trainers" / "broken_serving_trainer.py").write_text(
        textwrap.dedent(BROKEN_SERVING_TRAINER))
    monkeypatch.syspath_prepend(str(tmp_path / "trainers"))
    server = ModelServer(ServerOptions("sicot", serving, grpc_port=0, rest_port=None,
                                       poll_seconds=0.5)).start()
    client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "sicot")
    image = datasets.image_bytes(0, seed=3)
    from sicot.serving.client import build_inputs

    before = client.predict("serving_default", build_inputs(["image"], image, None, None))
    local_runner.run_local(
        data_root=data, pipeline_root=root, serving_dir=serving,
        model_config={"preset": "ce", "epochs": 1},
        transform_config={"image_size": 32, "band_edges": [4, 10]},
        schema_path=configs.CURATED_SCHEMA, import_config={},
        thresholds=configs.BlessingThresholds(max_overall_drop=1.0, max_few_drop=1.0),
        run_fn="broken_serving_trainer.run_fn")
    runs = run_summary.latest_run(mlmd, "sicot")
    summary = run_summary.format_summary(runs, serving)
    assert runs["Evaluator"].properties["blessing"]["blessed"] == 1
    canary = runs["Canary"].properties["blessing"]
    assert canary["blessed"] == 0
    print("broken-serving candidate canary:", canary["reason"])
    assert "serving_default: gRPC Predict failed: INVALID_ARGUMENT" in canary["reason"]
    assert "serving_image_text: gRPC Predict failed: INVALID_ARGUMENT" in canary["reason"]
    assert "serving_examples" not in canary["reason"]  # its path was not broken
    assert "Canary: NOT BLESSED: serving_default" in summary
    assert "Not pushed (the canary failed)" in summary
    # the error page says why there is no analysis instead of failing the run
    assert "Error analysis: the serving signatures failed (InvalidArgumentError" in summary
    assert os.listdir(serving) == versions
    time.sleep(1.5)  # a few polls of the serving directory
    try:
        status = client.model_status()
        after = client.predict("serving_default", build_inputs(["image"], image, None, None))
    finally:
        client.close()
        server.stop()
    assert status == [(int(versions[0]), "AVAILABLE", "")]
    assert after.version == before.version == int(versions[0])
    assert (after.outputs["classes"] == before.outputs["classes"]).all()

    # 4. sicot score: a planted mislabelled listing is the top suspect; counts add up
    import json
    import shutil

    planted = tmp_path / "planted"
    planted.mkdir()
    # a copy, not a symlink: the importer's path rule quarantines images that resolve outside
    # the dataset folder (path_outside), which a link to another folder does
    shutil.copytree(os.path.join(data, "images"), planted / "images")
    for split in ("train", "test"):
        shutil.copy(os.path.join(data, f"{split}.jsonl"), planted / f"{split}.jsonl")
    lines = (planted / "test.jsonl").read_text().splitlines()
    lines.append(json.dumps({"image": "images/test_0_0.jpg", "title": "colour7 box",
                             "tags": ["tag1"], "label": "class-07"}))
    lines.append(json.dumps({"image": "images/no_such.jpg", "label": "class-01"}))
    (planted / "test.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores" / "catalogue.jsonl"
    assert cli.main(["score", "--model", serving, "--data", str(planted), "--out",
                     str(out)]) == 0
    summary = json.loads((tmp_path / "scores" / "catalogue.jsonl.summary.json").read_text())
    for split, n in (("train", sum(TRAIN_COUNTS)), ("test", 22)):
        row = summary["splits"][split]
        assert row["records"] == n == row["scored"] + row["quarantined"], (split, row)
    assert summary["splits"]["test"]["quarantined"] == 1
    assert summary["splits"]["test"]["reasons"] == {"missing_image": 1}
    suspects = [json.loads(line) for line in
                (tmp_path / "scores" / "catalogue.jsonl.suspects.jsonl").read_text().splitlines()]
    print("suspects:", suspects[:3])
    assert suspects[0]["record_id"] == "test.jsonl:21", suspects[:3]
    assert (suspects[0]["label"], suspects[0]["predicted"]) == ("class-07", "class-00")
