"""Daily spans with warm start (slow): run on span 1, add span 2 with two new SKUs, rerun.

The second run reads the latest span in ExampleGen, both spans in Transform and the Trainer
(rolling window of 2, analyzer cache of span 1 reused), and warm-starts from the first run's
model: the Trainer's base_model is that model, its visual tower started exactly from the old
weights (the weight sum recorded at the start of training equals the old model's), the old
classes kept their rows, and the pushed model recognises the new SKUs.
"""
import json
import os
import zlib

import numpy as np
import pytest
import tensorflow as tf

from sicot import cli
from sicot.pipeline import run_summary

pytestmark = pytest.mark.slow

DAY1 = [10, 8, 6, 4, 3]        # classes 0..4
DAY2 = [6, 5, 4, 3, 2, 4, 4]   # the same five classes, new photos, + class 5 and 6 (new SKUs)


def _write_span(datasets, folder, train_counts, day):
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    for split, counts in (("train", train_counts), ("eval", [1] * len(train_counts)),
                          ("test", [2] * len(train_counts))):
        lines = []
        for c, n in enumerate(counts):
            for i in range(n):
                name = f"images/{split}_{c}_{i}.jpg"
                seed = zlib.crc32(f"day{day}/{split}/{c}/{i}".encode())
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(datasets.image_bytes(c, seed=seed))
                lines.append(json.dumps({"image": name, "title": f"colour{c} box",
                                         "tags": ["sale"], "label": f"class-{c:02d}"}))
        with open(os.path.join(folder, f"{split}.jsonl"), "w") as f:
            f.write("\n".join(lines) + "\n")


def _history(runs):
    run_dir = runs["Trainer"].outputs["model_run"][0]
    with tf.io.gfile.GFile(os.path.join(run_dir, "history.json")) as f:
        return json.load(f)


def test_two_spans_with_warm_start(tmp_path, datasets):
    data, root = str(tmp_path / "data"), str(tmp_path / "root")
    serving = str(tmp_path / "serving")
    args = ["run", "--data", data, "--pipeline-root", root, "--serving-dir", serving,
            "--model", "logit_adjust", "--epochs", "2", "--image-size", "16",
            "--band-edges", "5,8", "--span-folder", "day-{SPAN}", "--rolling-spans", "2",
            "--warm-start", "--max-overall-drop", "1.0", "--max-few-drop", "1.0"]
    mlmd = os.path.join(root, "metadata.sqlite")
    # Band edges 5,8 give both runs a few-shot slice (day 1: classes 3, 4; the day 1 + 2
    # window: the new SKUs 5, 6), which the gates need to bless; the change gates are opened
    # (2 epochs at 16 px: this test is about spans and warm start, not about accuracy).

    _write_span(datasets, os.path.join(data, "day-1"), DAY1, day=1)
    assert cli.main(args) == 0
    first = run_summary.latest_run(mlmd, "sicot")
    assert first["Pusher"].state == "COMPLETE"
    assert _history(first)["warm_start"] is None  # nothing to start from yet
    first_model = first["Trainer"].outputs["model"][0]

    _write_span(datasets, os.path.join(data, "day-2"), DAY2, day=2)
    assert cli.main(args) == 0
    second = run_summary.latest_run(mlmd, "sicot")
    for node in ("ManifestExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"):
        assert second[node].state == "COMPLETE", (node, second[node].state)
    # ExampleGen read day 2 only; its examples hold day 2's records
    assert second["ManifestExampleGen"].properties["examples"]["examples_train"] == sum(DAY2)
    # Transform read both spans (rolling window) and had span 1's analyzer cache to reuse
    assert len(second["Transform"].inputs["examples"]) == 2
    assert second["Transform"].inputs.get("analyzer_cache"), second["Transform"].inputs

    # the Trainer started from the first run's model
    assert second["Trainer"].inputs["base_model"] == [first_model]
    report = _history(second)["warm_start"]
    assert sorted(report["new_classes"]) == ["class-05", "class-06"]  # in vocabulary order
    assert report["kept_classes"] == 5 and report["dropped_classes"] == []
    from sicot.trainer import warm_start

    old_model, old_classes, _ = warm_start.load_base_model(
        os.path.join(first_model, "Format-Serving"))
    old_sum = float(sum(np.sum(np.asarray(w, dtype="float64"))
                        for w in old_model.visual_tower.weights))
    assert report["visual_tower_weight_sum"] == pytest.approx(old_sum, rel=1e-9)
    assert sorted(old_classes) == [f"class-{c:02d}" for c in range(5)]

    # the pushed model (the newest version) knows the new SKUs
    versions = sorted(int(v) for v in os.listdir(serving) if v.isdigit())
    assert len(versions) == 2
    import tensorflow_text  # noqa: F401 - the Transform graph's ops

    model = tf.saved_model.load(os.path.join(serving, str(versions[-1])))
    images = [datasets.image_bytes(c, seed=1000 + i) for c in (5, 6) for i in range(3)]
    top1 = model.signatures["serving_default"](image=tf.constant(images))["classes"].numpy()[:, 0]
    truth = [f"class-{c:02d}" for c in (5, 6) for _ in range(3)]
    correct = sum(p.decode() == t for p, t in zip(top1, truth))
    assert correct >= 4, list(zip(top1, truth))
