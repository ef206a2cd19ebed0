"""The error-analysis page (trainer/evaluation/error_analysis.py) rendered in headless Chromium: its
tables, the accuracy plot and every thumbnail are shown, and a screenshot is taken."""
import io
import os
import re

import numpy as np
from PIL import Image

from sicot.trainer.evaluation import error_analysis

COLOURS = {"red-mug": (220, 30, 30), "green-lamp": (30, 200, 40), "blue-shoe": (20, 40, 230)}


def png(rgb):
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 30, 3), rgb, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_inputs():
    labels = ["red-mug"] * 4 + ["green-lamp"] * 3 + ["blue-shoe"] * 3
    top1 = ["red-mug"] * 4 + ["green-lamp", "red-mug", "red-mug"] + ["blue-shoe", "green-lamp",
                                                                       "blue-shoe"]
    records = [{"image": png(COLOURS[l]), "label": l.encode(), "record_id": f"test:{i}".encode(),
                "title": b"", "tags": b""} for i, l in enumerate(labels)]
    predictions = {"image_only": [[p, "x"] for p in top1]}
    counts = {"red-mug": 150, "green-lamp": 30, "blue-shoe": 5}
    per_class = {"image_only": {}}
    for name in counts:
        idx = [i for i, l in enumerate(labels) if l == name]
        per_class["image_only"][name] = {
            "count": len(idx), "top1": float(np.mean([top1[i] == name for i in idx])),
            "top5": 1.0, "train_count": counts[name]}
    report = {"saved_model": "/models/m/1", "data": "/data/d", "split": "test", "records": 10,
              "band_edges": [20, 100],
              "results": {"image_only": {
                  "overall": {"count": 10, "top1": 0.7, "top5": 1.0},
                  "many": {"count": 4, "top1": 1.0, "top5": 1.0},
                  "medium": {"count": 3, "top1": 1 / 3, "top5": 1.0},
                  "few": {"count": 3, "top1": 2 / 3, "top5": 1.0}}},
              "per_class": per_class}
    confusion = {"accuracy": 0.7, "examples": 10, "classes": 3,
                 "top_confusions": [("green-lamp", "red-mug", 2), ("blue-shoe", "green-lamp", 1)]}
    return report, records, predictions, confusion


def test_confused_pairs_are_counted_most_frequent_first():
    pairs = error_analysis.confused_pairs(["a", "a", "b", "b", "b", "c"],
                                          ["b", "b", "a", "b", "c", "c"])
    assert [(t, p, n) for t, p, n, _ in pairs] == [("a", "b", 2), ("b", "a", 1), ("b", "c", 1)]
    assert pairs[0][3] == [0, 1]


def test_report_renders_in_headless_chromium(tmp_path, chromium):
    report, records, predictions, confusion = make_inputs()
    page = error_analysis.write_report(str(tmp_path / "report"), report, records, predictions,
                                       confusion)
    dom, screenshot = chromium.render(page, tmp_path)
    text = re.sub(r"<[^>]+>", " ", dom)
    text = " ".join(text.split())
    assert "SICoT error analysis" in text
    assert "image_only few 3 66.7% 100.0%" in text                    # band table
    assert "green-lamp red-mug 2 67%" in text                        # most confused pair
    assert "blue-shoe green-lamp 1 33%" in text
    assert "argmax accuracy 70.0% (the table's image-only top-1: 70.0%)" in text  # TFMA part
    # every image (the plot, 3 error thumbnails + 2 references) was decoded and shown
    assert "images shown: 6 of 6" in text, text[-300:]
    assert "accuracy_vs_train_count.png" in dom
    shot = Image.open(screenshot)
    assert shot.size == (1200, 2400)
    pixels = np.asarray(shot.convert("RGB"))
    assert pixels.std() > 10  # not a blank page
    # the plot is on screen: its title text region is not uniform white
    assert os.path.getsize(os.path.join(tmp_path, "report", "accuracy_vs_train_count.png")) > 5000
