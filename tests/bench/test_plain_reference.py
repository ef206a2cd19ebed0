"""bench/plain_reference.py: learns a task with a known answer and reports in the layout of
`sicot evaluate --json` (bands from the training counts); long_tail_report reuses its runs
only for the same head and schedule."""
import argparse
import importlib.util
import json
import os

import pytest

from sicot import contract

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Class = colour of a square on a black background; training counts span the three bands.
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230),
           "yellow": (230, 220, 40)}
TRAIN_COUNTS = {"red": 120, "green": 40, "blue": 15, "yellow": 12}


def _write_split(root, split, counts, rng):
    from PIL import Image

    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    with open(os.path.join(root, f"{split}.jsonl"), "w") as f:
        for label, n in counts.items():  # written class by class, as real exports are
            for i in range(n):
                side = int(rng.integers(6, 14))
                x, y = (int(v) for v in rng.integers(0, 24 - side, size=2))
                image = Image.new("RGB", (24, 30))
                image.paste(COLOURS[label], (x, y, x + side, y + side))
                path = f"images/{split}_{label}_{i}.png"
                image.save(os.path.join(root, path))
                f.write(json.dumps({"image": path, "title": label, "label": label}) + "\n")


@pytest.fixture(scope="module")
def colour_squares(tmp_path_factory):
    import numpy as np

    root = str(tmp_path_factory.mktemp("squares"))
    rng = np.random.default_rng(0)
    _write_split(root, "train", TRAIN_COUNTS, rng)
    _write_split(root, "test", {c: 10 for c in COLOURS}, rng)
    return root


@pytest.mark.parametrize("head", ["logit_adjust", "cosine"])
def test_learns_colours_and_reports_bands(colour_squares, tmp_path, head):
    out = tmp_path / "evaluation.json"
    plain = _load("plain_reference")
    # batch 8: enough steps for the BatchNorm moving statistics to settle (at batch 16 they
    # still carry 16% of their initial values after 15 epochs of this tiny set)
    assert plain.main(["--data", colour_squares, "--head", head, "--epochs", "15",
                       "--image-size", "16", "--batch-size", "8", "--seed", "0",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    results = report["results"][contract.IMAGE_ONLY]
    assert results[contract.OVERALL]["count"] == 40
    bands = {c: contract.band_of_count(n) for c, n in TRAIN_COUNTS.items()}
    for band in contract.BANDS:
        assert results[band]["count"] == 10 * sum(b == band for b in bands.values())
    assert results[contract.OVERALL]["top1"] >= 0.8, results  # chance is 0.25
    assert report["per_class"][contract.IMAGE_ONLY]["yellow"]["train_count"] == 12


def test_report_reuses_a_plain_run_only_for_the_same_head_and_schedule(tmp_path):
    report = _load("long_tail_report")
    run = tmp_path / "runs" / "iconshop" / "plain_cosine" / "seed0"
    run.mkdir(parents=True)
    (run / "train.log").write_text(
        "/x/python bench/plain_reference.py --data /d --head cosine --epochs 20 "
        "--image-size 32 --seed 0 --json /o/evaluation.json\n")
    same = argparse.Namespace(epochs=20, image_size=32, set=["crt_epochs=2"])  # --set: sicot only
    report._check_reused_run(str(run), "plain_cosine", 0, same)
    for model, changed in (("plain_ce", {}), ("plain_cosine", dict(epochs=6))):
        with pytest.raises(SystemExit, match="finished with"):
            report._check_reused_run(str(run), model, 0,
                                     argparse.Namespace(**{**vars(same), **changed}))
