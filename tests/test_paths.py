"""`sicot.paths`: URL normalisation and the "inside a folder" rule for remote folders, and
`sicot import` from and to a non-local file system (ram://) with the path rule enforced."""
import json

import pytest

from sicot import paths


@pytest.mark.parametrize("url, normal", [
    ("gs://b/a//b/../c/", "gs://b/a/c"), ("gs://b", "gs://b"), ("gs://b/", "gs://b"),
    ("gs://b/../x", "gs://b/x"), ("ram://x/data/./y", "ram://x/data/y")])
def test_normalize_url(url, normal):
    assert paths.normalize_url(url) == normal


def test_inside_rule_for_urls():
    assert paths.is_inside("gs://b/data/images/x.jpg", "gs://b/data")
    assert paths.is_inside(paths.join_url("gs://b/data", "images/../x.jpg"), "gs://b/data")
    assert not paths.is_inside(paths.join_url("gs://b/data", "../x.jpg"), "gs://b/data")
    assert not paths.is_inside("gs://b/database/x.jpg", "gs://b/data")  # a prefix, not a folder
    assert not paths.is_inside("gs://other/data/x.jpg", "gs://b/data")
    assert not paths.is_inside("ram://b/data/x.jpg", "gs://b/data")
    assert not paths.is_inside("/b/data/x.jpg", "gs://b/data")
    assert paths.is_remote("ram://x") and not paths.is_remote("/tmp/x")
    assert paths.absolute("gs://b/a/../c") == "gs://b/c"


def _jpeg():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_import_from_and_to_ram_keeps_the_path_rule():
    import tensorflow as tf

    from sicot.data.importer import ImportConfig, import_dataset

    data, out = "ram://import-test/data", "ram://import-test/out"
    image = _jpeg()
    for name in ("images/a.jpg", "images/b.jpg"):
        with tf.io.gfile.GFile(f"{data}/{name}", "wb") as f:
            f.write(image)
    with tf.io.gfile.GFile("ram://import-test/secret.jpg", "wb") as f:
        f.write(image)
    rows = [{"image": "images/a.jpg", "label": "x"},
            {"image": "images/../images/b.jpg", "label": "y"},
            {"image": "../secret.jpg", "label": "x"},                    # escapes the folder
            {"image": "ram://import-test/secret.jpg", "label": "x"},    # absolute, outside
            {"image": "/etc/hostname", "label": "x"},                    # local, outside
            {"image": "images/missing.jpg", "label": "x"}]
    for split in ("train", "test"):
        with tf.io.gfile.GFile(f"{data}/{split}.jsonl", "w") as f:
            f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    report = import_dataset(data, out, ImportConfig(max_bad_fraction=1.0), log=lambda *_: None)
    assert report.splits["train"].written == 2
    assert report.splits["train"].reasons == {"path_outside": 3, "missing_image": 1}
    written = list(tf.data.TFRecordDataset(report.tfrecord_path("train"), compression_type="GZIP"))
    assert len(written) == 2 and report.tfrecord_path("train").startswith(out + "/")
    with tf.io.gfile.GFile(report.quarantine_path) as f:
        assert len(f.read().splitlines()) == 8  # 4 per split, each with its reason
    # an allowed remote folder admits absolute paths into it
    report = import_dataset(data, out, ImportConfig(max_bad_fraction=1.0,
                                                    allowed_dirs=("ram://import-test",)),
                            log=lambda *_: None)
    assert report.splits["train"].reasons == {"path_outside": 2, "missing_image": 1}
