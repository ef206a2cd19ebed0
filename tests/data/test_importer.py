import io
import json
import os
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sicot import cli
from sicot.errors import UserError
from sicot.data.importer import (ImportConfig, convert_row, header_dimensions, import_dataset,
                                 normalize_text, sniff_format)
from sicot.data.manifest import ManifestRow, read_manifest
from sicot import contract

RAW_SPEC = {k: tf.io.FixedLenFeature([], tf.string) for k in contract.RAW_FEATURE_KEYS}


def _image(fmt="PNG", size=(8, 6), colour=(200, 30, 30)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _png_claiming(width, height):
    """A PNG whose header claims width x height (a decompression bomb's signature)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\x00" * 64)


def _read_tfrecords(path):
    return [tf.io.parse_single_example(r, RAW_SPEC)
            for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]


def _lines(records):
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                   for r in records)


# ---------------------------------------------------------------------------------------------


def test_round_trip_of_a_synthetic_dataset(small_synth, tmp_path):
    report = import_dataset(small_synth, tmp_path / "out", log=lambda *_: None)
    for split in ("train", "eval", "test"):
        manifest = [json.loads(l) for l in (small_synth / f"{split}.jsonl").read_text().splitlines()]
        examples = _read_tfrecords(report.tfrecord_path(split))
        assert report.splits[split].records == report.splits[split].written == len(manifest)
        assert len(examples) == len(manifest)
        # Records are written in a seeded random order (not grouped as the manifest is):
        # each one exactly once, traceable by record_id.
        by_id = {ex["record_id"].numpy().decode(): ex for ex in examples}
        assert sorted(by_id) == sorted(f"{split}.jsonl:{n}" for n in range(1, len(manifest) + 1))
        if len(manifest) > 5:
            assert [ex["record_id"].numpy().decode() for ex in examples] != [
                f"{split}.jsonl:{n}" for n in range(1, len(manifest) + 1)]
        for number, record in enumerate(manifest, start=1):
            ex = by_id[f"{split}.jsonl:{number}"]
            assert ex["image"].numpy() == (small_synth / record["image"]).read_bytes()
            assert ex["title"].numpy().decode() == normalize_text(record["title"])
            assert ex["tags"].numpy().decode() == "|".join(record["tags"])
            assert ex["label"].numpy().decode() == record["label"]
    assert (tmp_path / "out" / "quarantine.jsonl").read_text() == ""
    saved = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert saved["splits"]["train"]["written"] == report.splits["train"].written


@pytest.fixture
def messy(tmp_path):
    """A dataset with one record of every kind of problem, and the reason code each must get."""
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (data / "img/ok.png").write_bytes(_image("PNG"))
    (data / "img/ok.jpg").write_bytes(_image("JPEG", (20, 10)))
    (data / "img/named.jpg").write_bytes(_image("PNG"))  # PNG bytes under a .jpg name: fine
    (data / "img/text.jpg").write_bytes(b"hello, I am not an image")
    (data / "img/gif.png").write_bytes(b"GIF89a" + b"\x00" * 20)
    (data / "img/big.png").write_bytes(_image("PNG", (300, 200)))
    (data / "img/bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    jpeg = _image("JPEG", (64, 64))
    (data / "img/truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = bytearray(_image("PNG", (16, 16)))
    png[-20] ^= 0xFF  # damage the compressed data / CRC
    (data / "img/damaged.png").write_bytes(bytes(png))
    (data / "img/empty.jpg").write_bytes(b"")
    (data / "img/dir.jpg").mkdir()
    (outside / "secret.png").write_bytes(_image("PNG"))
    (allowed / "shared.png").write_bytes(_image("PNG"))
    os.symlink(outside / "secret.png", data / "img/link.png")
    os.symlink(data / "img/ok.png", data / "img/inside-link.png")

    def rec(image, label="mug-1", **more):
        return {"image": image, "label": label, **more}

    train = [
        (rec("img/ok.png", title="Red  mug\tcafe\u0301", tags=["red", " glossy ", ""]), None),
        (rec("img/ok.jpg", tags="red|mug|", title=None), None),
        (rec("img/named.jpg"), None),
        (rec("img/inside-link.png"), None),
        (rec(str(data / "img/ok.png")), None),  # absolute, inside the dataset folder
        (rec(str(allowed / "shared.png")), None),  # absolute, inside --allow-dir
        (rec("img/./sub/../ok.png", label=7), None),
        ('{"image": "img/ok.png", "label": ', "bad_json"),
        ({"label": "x"}, "missing_field"),
        (rec("img/ok.png", label=None), "missing_field"),
        (rec(None), "missing_field"),
        (rec(["img/ok.png"]), "bad_field"),
        (rec("img/ok.png", tags=["a", 3]), "bad_field"),
        (rec("img/ok\x00.png"), "bad_field"),
        (rec("img/" + "x" * 5000 + ".png"), "unreadable_image"),
        (rec("img/ok.png", title=12), "bad_field"),
        (rec("img/ok.png", label=" \t\u200b "), "empty_label"),
        ('{"image": "img/ok.png", "label": "mug-1", "title": "\\ud800"}', "bad_text"),
        (rec("img/missing.jpg"), "missing_image"),
        (rec("img/dir.jpg"), "unreadable_image"),
        (rec("img/text.jpg"), "not_image"),
        (rec("img/gif.png"), "not_image"),
        (rec("img/empty.jpg"), "not_image"),
        (rec("img/big.png"), "too_many_pixels"),
        (rec("img/bomb.png"), "too_many_pixels"),
        (rec("img/truncated.jpg"), "corrupt_image"),
        (rec("img/damaged.png"), "corrupt_image"),
        (rec("../outside/secret.png"), "path_outside"),
        (rec("img/link.png"), "path_outside"),
        (rec(str(outside / "secret.png")), "path_outside"),
    ]
    (data / "train.jsonl").write_text(_lines(r for r, _ in train), encoding="utf-8")
    (data / "test.csv").write_bytes(
        b"image,title,tags,label\n"
        b"img/ok.png,\"plain, csv\",a|b,mug-1\n"
        b"img/ok.png,caf\xe9,,mug-1\n"
        b"img/ok.png,x,,\n")
    expected = {f"train.jsonl:{i}": code for i, (_, code) in enumerate(train, start=1)}
    expected.update({"test.csv:2": None, "test.csv:3": "bad_text", "test.csv:4": "empty_label"})
    config = ImportConfig(max_pixels=50_000, allowed_dirs=(str(allowed),), max_bad_fraction=1.0)
    return data, config, expected


def test_every_bad_record_is_quarantined_with_its_reason(messy, tmp_path):
    data, config, expected = messy
    out = tmp_path / "out"
    report = import_dataset(data, out, config, log=lambda *_: None)

    quarantine = [json.loads(l) for l in (out / "quarantine.jsonl").read_text().splitlines()]
    got = {q["source"]: q["reason"].split(":", 1)[0] for q in quarantine}
    assert got == {s: code for s, code in expected.items() if code}
    for q in quarantine:  # the raw record is kept, and the reason says what is wrong
        assert q["record"] and len(q["reason"]) > len(q["reason"].split(":", 1)[0]) + 2
    reasons = {q["source"]: q["reason"] for q in quarantine}
    assert reasons["train.jsonl:19"] == "missing_image: img/missing.jpg does not exist"
    assert "100000x100000" in reasons["train.jsonl:25"]
    assert "outside the dataset folder" in reasons["train.jsonl:28"]

    written = {s: [ex["record_id"].numpy().decode() for ex in _read_tfrecords(report.tfrecord_path(s))]
               for s in ("train", "test")}
    assert sorted(written["train"] + written["test"]) == sorted(s for s, c in expected.items() if c is None)
    for split, manifest in (("train", "train.jsonl"), ("test", "test.csv")):
        counts = report.splits[split]
        n = sum(1 for s in expected if s.startswith(manifest))
        assert counts.records == n == counts.written + counts.quarantined
        assert sum(counts.reasons.values()) == counts.quarantined
    assert not report.tfrecord_path("eval").exists()


def test_good_records_are_normalised(messy, tmp_path):
    data, config, _ = messy
    report = import_dataset(data, tmp_path / "out", config, log=lambda *_: None)
    examples = {ex["record_id"].numpy().decode(): ex for ex in _read_tfrecords(report.tfrecord_path("train"))}
    first = examples["train.jsonl:1"]
    assert first["title"].numpy().decode() == "Red mug caf\u00e9"  # NFC, whitespace collapsed
    assert first["tags"].numpy().decode() == "red|glossy"
    assert first["image"].numpy() == (data / "img/ok.png").read_bytes()
    assert examples["train.jsonl:2"]["tags"].numpy().decode() == "red|mug"
    assert examples["train.jsonl:2"]["title"].numpy() == b""
    assert examples["train.jsonl:7"]["label"].numpy() == b"7"
    test = _read_tfrecords(report.tfrecord_path("test"))
    assert [ex["title"].numpy().decode() for ex in test] == ["plain, csv"]


def test_too_many_bad_records_fail_with_a_clear_message(messy, tmp_path):
    data, config, expected = messy
    out = tmp_path / "out"
    strict = ImportConfig(max_pixels=config.max_pixels, allowed_dirs=config.allowed_dirs,
                          max_bad_fraction=0.5)
    with pytest.raises(UserError) as e:
        import_dataset(data, out, strict, log=lambda *_: None)
    message = str(e.value)
    bad_train = sum(1 for s, c in expected.items() if c and s.startswith("train"))
    assert f"train: {bad_train} of 30 records" in message and "--max-bad-fraction 0.5" in message
    assert "test: 2 of 3 records (66.7%)" in message
    assert "quarantine.jsonl" in message and "not_image 3" in message
    assert not list(out.glob("*.tfrecord.gz*"))  # no half-good output for a pipeline to pick up
    assert len((out / "quarantine.jsonl").read_text().splitlines()) == bad_train + 2


def test_import_command(messy, tmp_path, capsys):
    data, config, _ = messy
    out = tmp_path / "out"
    argv = ["import", "--data", str(data), "--out", str(out), "--max-pixels", "50000",
            "--allow-dir", config.allowed_dirs[0], "--no-progress"]
    assert cli.main(argv) == 2
    assert "more than --max-bad-fraction 0.05" in capsys.readouterr().err
    assert cli.main(argv + ["--max-bad-fraction", "0.9"]) == 0
    printed = capsys.readouterr().out
    assert "train (train.jsonl): 30 records, 7 written, 23 quarantined" in printed
    assert "test (test.csv): 3 records, 1 written, 2 quarantined" in printed
    assert cli.main(["import", "--data", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "does not exist or is not a folder" in capsys.readouterr().err


def test_convert_row_alone_is_what_example_gen_calls(tmp_path):
    (tmp_path / "a.png").write_bytes(_image("PNG"))
    row = ManifestRow("train.jsonl:5", {"image": "a.png", "title": "t", "tags": ["x"], "label": "L"},
                      None, "{...}")
    example, bad = convert_row(row, tmp_path, ImportConfig())
    assert bad is None
    parsed = tf.io.parse_single_example(example, RAW_SPEC)
    assert {k: parsed[k].numpy() for k in RAW_SPEC} == {
        "image": _image("PNG"), "title": b"t", "tags": b"x", "label": b"L", "record_id": b"train.jsonl:5"}
    example, bad = convert_row(row, tmp_path, ImportConfig(max_image_bytes=50))
    assert example is None and bad["reason"].startswith("image_too_large: a.png has ")
    example, bad = convert_row(ManifestRow("train.jsonl:6", None, "bad_json: x", "{"), tmp_path)
    assert example is None and bad == {"source": "train.jsonl:6", "record": "{", "reason": "bad_json: x"}


def test_header_dimensions_without_decoding():
    assert sniff_format(_image("PNG")) == "PNG" and sniff_format(_image("JPEG")) == "JPEG"
    assert sniff_format(b"GIF89a") is None
    assert header_dimensions(_image("PNG", (31, 7)), "PNG") == (31, 7)
    assert header_dimensions(_image("JPEG", (31, 7)), "JPEG") == (31, 7)
    progressive = io.BytesIO()
    Image.new("RGB", (40, 50)).save(progressive, format="JPEG", progressive=True)
    assert header_dimensions(progressive.getvalue(), "JPEG") == (40, 50)
    assert header_dimensions(_png_claiming(70_000, 80_000), "PNG") == (70_000, 80_000)
    with pytest.raises(ValueError):
        header_dimensions(b"\xff\xd8\xff\xe0\x00", "JPEG")


def test_bad_import_config_is_aUserError(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(UserError, match="--max-bad-fraction must be in"):
        import_dataset(tmp_path, tmp_path / "o", ImportConfig(max_bad_fraction=2), log=lambda *_: None)
    with pytest.raises(UserError, match="--allow-dir relative must be an absolute path"):
        import_dataset(tmp_path, tmp_path / "o", ImportConfig(allowed_dirs=("relative",)), log=lambda *_: None)
    with pytest.raises(UserError, match="must not be the data folder"):
        import_dataset(tmp_path, tmp_path, ImportConfig(), log=lambda *_: None)
