"""Batch scoring (trainer/evaluation/batch_scoring.py, `sicot score`) on the real SICoT export, Beam
DirectRunner: every manifest row ends in the predictions or in the quarantine, counts add up,
and the suspects / duplicates reports follow their rules. (The planted mislabelled record
against a trained model is in tests/pipeline/test_release_safety.py.)"""
import io
import json
import os
import re

import numpy as np
import pytest

from sicot import cli
from sicot.trainer.evaluation import batch_scoring

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]


def png(colour, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None] + rng.normal(0, 10, (20, 20, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("score_data")
    (root / "images").mkdir()
    for split, n in (("train", 6), ("test", 4)):
        lines = []
        for i in range(n):
            c = i % 3
            name = f"images/{split}_{i}.png"
            (root / name).write_bytes(png(COLOURS[c], hash((split, i)) % 1000))
            lines.append(json.dumps({"image": name, "title": f"word{c} item",
                                     "tags": ["gift"], "label": f"class{c}"}))
        if split == "test":
            lines.append(json.dumps({"image": "images/missing.png", "label": "class0"}))
            lines.append("{not json")
            (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
            lines.append(json.dumps({"image": "images/broken.png", "label": "class1"}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return str(root)


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_sicot_score_accounts_for_every_record(tiny_saved_model, data_dir, tmp_path, capsys):
    out = str(tmp_path / "scores" / "predictions.jsonl")
    assert cli.main(["score", "--model", tiny_saved_model, "--data", data_dir, "--out", out,
                     "--embedding", "--suspect-min-score", "0"]) == 0
    printed = capsys.readouterr().out
    files = batch_scoring.ScoringFiles(out)
    predictions = read_lines(files.predictions)
    quarantine = read_lines(files.quarantine)
    summary = json.load(open(files.summary))
    assert summary["splits"]["train"] == {"records": 6, "scored": 6, "quarantined": 0,
                                          "reasons": {}}
    test = summary["splits"]["test"]
    assert (test["records"], test["scored"], test["quarantined"]) == (7, 4, 3)
    assert sorted(e["reason"].split(":")[0] for e in quarantine) == sorted(
        test["reasons"].keys()) and len(quarantine) == 3
    assert {e["split"] for e in quarantine} == {"test"}
    assert len(predictions) == 10 and len({p["record_id"] for p in predictions}) == 10
    first = predictions[0]
    assert set(first) == {"record_id", "split", "label", "image_only", "image_text",
                          "embedding"}
    assert len(first["image_only"]["classes"]) == len(first["image_only"]["scores"]) == 3
    assert first["image_only"]["scores"] == sorted(first["image_only"]["scores"], reverse=True)
    # suspects at threshold 0: exactly the records whose image-only top-1 is not their label
    wrong = {p["record_id"] for p in predictions
             if p["image_only"]["classes"][0] != p["label"]}
    suspects = read_lines(files.suspects)
    assert {s["record_id"] for s in suspects} == wrong
    assert summary["suspects"] == len(wrong)
    assert re.search(r"^test\s+7\s+4\s+3\s+\(", printed, re.M), printed
    assert not os.path.exists(files.embeddings)


def test_suspect_threshold_and_duplicates_rules():
    ids = ["a", "b", "c", "d"]
    labels = ["x", "y", "x", "z"]
    matrix = np.array([[1, 0], [0.999, 0.0447], [1, 0], [0, 1]], np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    pairs = batch_scoring.find_duplicates(ids, labels, matrix, 0.99, 10, block=2)
    # a-c: same label (not a cross-SKU duplicate); a-b and b-c: different labels, similar
    assert [(p["a"]["record_id"], p["b"]["record_id"]) for p in pairs] == [("a", "b"),
                                                                           ("b", "c")]
    assert batch_scoring.find_duplicates(ids, labels, matrix, 0.99, 1)[0]["a"]["record_id"] == "a"


def test_bad_settings_are_named(tiny_saved_model, data_dir, tmp_path, capsys):
    rc = cli.main(["score", "--model", tiny_saved_model, "--data", data_dir, "--out",
                   str(tmp_path / "p.jsonl"), "--suspect-min-score", "2"])
    assert rc == 2 and "suspect_min_score must be in [0, 1]" in capsys.readouterr().err
    rc = cli.main(["score", "--model", tiny_saved_model, "--data", data_dir, "--out",
                   str(tmp_path / "p.jsonl"), "--splits", "dev"])
    assert rc == 2 and "--splits: unknown split(s) dev" in capsys.readouterr().err
