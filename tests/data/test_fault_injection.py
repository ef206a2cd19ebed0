"""Fault injection over the dataset format and the import: every record either imports
correctly or lands in quarantine with its reason, the totals add up, nothing crashes.

One dataset folder holds every fault we could think of (`build_fault_dataset`, one manifest
line per fault, each with the outcome it must have). It goes through `sicot import` (the
command, in this process) and through the pipeline's ManifestExampleGen executor (the real
component under LocalDagRunner, Beam DirectRunner, SQLite MLMD); both must agree record by
record, because they share `sicot.data.importer.convert_row`.

"Imports correctly" is checked against what the pipeline does next: the image of every
imported record must decode with `tf.io.decode_image(channels=3)`, the op Transform runs
(`sicot.trainer.transform.images.store_images`), so one bad image cannot stop a Transform
over millions of good ones.
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import io
import json
import os
import struct
import zlib

import numpy as np
import pytest

from sicot.cli import main

OUTSIDE_NAME = "outside.jpg"


# -- images ------------------------------------------------------------------------------------
def _pixels(seed: int, size=(48, 40)):
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
    pixels[h // 4:3 * h // 4, w // 4:3 * w // 4] = (200, 40 + seed % 150, 30)
    return pixels


def encode(seed: int, fmt: str = "JPEG", size=(48, 40), mode: str = "RGB") -> bytes:
    from PIL import Image

    image = Image.fromarray(_pixels(seed, size))
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims width x height 1-bit pixels; the IDAT holds the first rows of
    zeros (a few KB that would inflate to 1.25 GB if anything tried to decode it all)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * ((1 + (width + 7) // 8) * 64), 9)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows)
            + _png_chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header is edited to claim width x height."""
    data = bytearray(encode(7))
    for marker in (0xC0, 0xC2):
        i = data.find(bytes([0xFF, marker]))
        if i > 0:
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise AssertionError("no SOF marker")


def corrupt_png(data: bytes) -> bytes:
    data = bytearray(data)
    i = data.index(b"IDAT")
    data[i + 40] ^= 0xFF  # the chunk CRC no longer matches
    return bytes(data)


def scrambled_jpeg_scan(data: bytes) -> bytes:
    data = bytearray(data)
    start = data.index(b"\xff\xda") + 20
    for i in range(start, len(data) - 10, 7):
        data[i] = 0xFF if data[i] != 0xFF else 0x00
    return bytes(data)


# -- the dataset ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    name: str
    line: bytes             # the manifest line as written
    expect: str             # "ok" or the quarantine reason code
    label: str | None = None   # for "ok": the label after normalisation
    title: str | None = None   # for "ok": the title after normalisation (None: not checked)
    tags: str | None = None    # for "ok": the tags after normalisation (None: not checked)


def _record(**fields) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode("utf-8")


def build_fault_dataset(root) -> tuple[str, list[Case], str]:
    """Writes DATA/{train,test}.jsonl + images; returns (data_dir, train cases, outside_dir)."""
    root = str(root)
    data = os.path.join(root, "data")
    images = os.path.join(data, "images")
    outside = os.path.join(root, "outside")
    os.makedirs(images)
    os.makedirs(outside)

    def put(name: str, content: bytes) -> str:
        with open(os.path.join(images, name), "wb") as f:
            f.write(content)
        return "images/" + name

    with open(os.path.join(outside, OUTSIDE_NAME), "wb") as f:
        f.write(encode(99))  # a valid image: if the path rule failed, it would import
    os.symlink(os.path.join(outside, OUTSIDE_NAME), os.path.join(images, "link_out.jpg"))
    os.symlink(os.path.join(outside), os.path.join(images, "dir_out"))
    good = put("good.jpg", encode(1))
    os.symlink("good.jpg", os.path.join(images, "link_in.jpg"))
    os.symlink("loop_b", os.path.join(images, "loop_a"))
    os.symlink("loop_a", os.path.join(images, "loop_b"))
    os.mkfifo(os.path.join(images, "fifo.jpg"))  # reading it would block forever
    os.makedirs(os.path.join(images, "a_folder.jpg"))
    jpeg = encode(2)
    png = encode(3, "PNG")
    long_title = " ".join(f"word{i}" for i in range(100_000))

    ok, r = "ok", _record
    cases = [
        Case("good jpeg", r(image=good, title="red mug", tags=["kitchen", "mug"], label="mug"),
             ok, "mug", "red mug", "kitchen|mug"),
        Case("good png", r(image=put("good.png", png), title="lamp", label="lamp"), ok, "lamp"),
        Case("grey png", r(image=put("grey.png", encode(4, "PNG", mode="L")), label="lamp"), ok, "lamp"),
        Case("rgba png", r(image=put("rgba.png", encode(5, "PNG", mode="RGBA")), label="lamp"), ok, "lamp"),
        Case("palette png", r(image=put("pal.png", encode(6, "PNG", mode="P")), label="lamp"), ok, "lamp"),
        Case("cmyk jpeg", r(image=put("cmyk.jpg", encode(8, mode="CMYK")), label="mug"), ok, "mug"),
        # images
        Case("truncated jpeg", r(image=put("trunc.jpg", jpeg[:len(jpeg) * 3 // 4]), label="mug"),
             "corrupt_image"),
        Case("jpeg cut in its header", r(image=put("head.jpg", jpeg[:40]), label="mug"), "corrupt_image"),
        Case("jpeg without end marker", r(image=put("noeoi.jpg", jpeg[:-2]), label="mug"), "corrupt_image"),
        Case("jpeg with scrambled scan", r(image=put("scan.jpg", scrambled_jpeg_scan(jpeg)), label="mug"),
             "corrupt_image"),
        Case("truncated png", r(image=put("trunc.png", png[:len(png) * 3 // 4]), label="lamp"),
             "corrupt_image"),
        Case("png with bad crc", r(image=put("crc.png", corrupt_png(png)), label="lamp"), "corrupt_image"),
        Case("png without IEND", r(image=put("noiend.png", png[:-12]), label="lamp"), "corrupt_image"),
        Case("zero-byte file", r(image=put("empty.jpg", b""), label="mug"), "not_image"),
        Case("png bomb 100000x100000", r(image=put("bomb.png", png_bomb()), label="mug"), "too_many_pixels"),
        Case("jpeg claiming 65000x65000", r(image=put("bomb.jpg", jpeg_claiming(65000, 65000)), label="mug"),
             "too_many_pixels"),
        Case("png named .jpg", r(image=put("really_png.jpg", png), label="lamp"), ok, "lamp"),
        Case("jpeg named .png", r(image=put("really_jpeg.png", jpeg), label="mug"), ok, "mug"),
        Case("text named .jpg", r(image=put("text.jpg", b"hello, not an image\n"), label="mug"), "not_image"),
        Case("gif", r(image=put("anim.gif", encode(9, "GIF")), label="mug"), "not_image"),
        Case("html named .png", r(image=put("page.png", b"<html><body>x</body></html>"), label="mug"),
             "not_image"),
        Case("too large a file", r(image=put("big.jpg", jpeg + b"\x00" * 300_000), label="mug"),
             "image_too_large"),
        Case("missing file", r(image="images/nope.jpg", label="mug"), "missing_image"),
        Case("a folder", r(image="images/a_folder.jpg", label="mug"), "unreadable_image"),
        Case("the dataset folder itself", r(image=".", label="mug"), "unreadable_image"),
        Case("a fifo", r(image="images/fifo.jpg", label="mug"), "unreadable_image"),
        Case("a manifest as image", r(image="test.jsonl", label="mug"), "not_image"),
        Case("symlink loop", r(image="images/loop_a", label="mug"), "unreadable_image"),
        Case("file name too long", r(image="images/" + "n" * 300 + ".jpg", label="mug"), "unreadable_image"),
        Case("path too long", r(image="images/" + "/".join(["d" * 200] * 30) + ".jpg", label="mug"),
             "unreadable_image"),
        Case("NUL in the path", r(image="images/good.jpg\u0000.txt", label="mug"), "bad_field"),
        Case("unpaired surrogate in the path", b'{"image": "images/\\ud800.jpg", "label": "mug"}',
             "bad_text"),
        # paths leaving the dataset folder
        Case("../ to an outside file", r(image="../outside/" + OUTSIDE_NAME, label="mug"), "path_outside"),
        Case("images/../../", r(image="images/../../outside/" + OUTSIDE_NAME, label="mug"), "path_outside"),
        Case("absolute outside", r(image=os.path.join(outside, OUTSIDE_NAME), label="mug"), "path_outside"),
        Case("/etc/passwd", r(image="/etc/passwd", label="mug"), "path_outside"),
        Case("/dev/zero", r(image="/dev/zero", label="mug"), "path_outside"),
        Case("/proc/self/environ", r(image="/proc/self/environ", label="mug"), "path_outside"),
        Case("symlink to an outside file", r(image="images/link_out.jpg", label="mug"), "path_outside"),
        Case("through a symlinked folder", r(image="images/dir_out/" + OUTSIDE_NAME, label="mug"),
             "path_outside"),
        Case("symlink inside the folder", r(image="images/link_in.jpg", label="mug"), ok, "mug"),
        Case("absolute path inside the folder", r(image=os.path.join(images, "good.jpg"), label="mug"),
             ok, "mug"),
        Case("a/./b/../ inside", r(image="images/./x/../good.jpg", label="mug"), ok, "mug"),
        # text
        Case("latin-1 title (not UTF-8)", b'{"image": "' + good.encode() + b'", "title": "caf\xe9", '
             b'"label": "mug"}', "bad_text"),
        Case("control characters", r(image=good, title="red\u0000mug\u0007\u001b[31m\u202egift\r\nsale",
                                     tags="a\tb|c\u0085d", label="mug"),
             ok, "mug", "red mug [31mgift sale", "a b|c d"),
        Case("zero-width characters", r(image=good, title="\u200bred\ufeff mug\u200d", label="mug"),
             ok, "mug", "red mug"),
        Case("empty title and tags", r(image=good, title="", tags=[], label="mug"), ok, "mug", "", ""),
        Case("no title and tags", r(image=good, label="mug"), ok, "mug", "", ""),
        Case("blank tags dropped", r(image=good, tags=["", "  ", "|", "x"], label="mug"), ok, "mug", None, "x"),
        Case("unpaired surrogate in the title", b'{"image": "' + good.encode()
             + b'", "title": "a\\udc80b", "label": "mug"}', "bad_text"),
        Case("100,000-word title", r(image=good, title=long_title, label="mug"), ok, "mug", long_title),
        Case("label with odd whitespace", r(image=good, label=" \t Red\u00a0\u3000Mug \n"), ok, "Red Mug"),
        Case("label decomposed (NFD)", r(image=good, label="Cafe\u0301"), ok, "Caf\u00e9"),
        Case("label composed (NFC)", r(image=good, label="Caf\u00e9"), ok, "Caf\u00e9"),
        Case("label in Chinese", r(image=good, label="\u732b\u7aa9"), ok, "\u732b\u7aa9"),
        Case("label as a number", r(image=good, label=7), ok, "7"),
        Case("label only spaces", r(image=good, label=" \t\n "), "empty_label"),
        Case("label only zero-width", r(image=good, label="\u200b\ufeff"), "empty_label"),
        Case("label true", r(image=good, label=True), "bad_field"),
        Case("label a float", r(image=good, label=1.5), "bad_field"),
        Case("label a list", r(image=good, label=["mug"]), "bad_field"),
        Case("label null", r(image=good, label=None), "missing_field"),
        Case("no label", r(image=good, title="x"), "missing_field"),
        Case("no image", r(title="x", label="mug"), "missing_field"),
        Case("image a number", r(image=12, label="mug"), "bad_field"),
        Case("title a list", r(image=good, title=["a"], label="mug"), "bad_field"),
        Case("tags a dict", r(image=good, tags={"a": 1}, label="mug"), "bad_field"),
        Case("tags with a number", r(image=good, tags=["a", 2], label="mug"), "bad_field"),
        Case("duplicate record 1", r(image=good, title="twin", label="mug"), ok, "mug", "twin"),
        Case("duplicate record 2", r(image=good, title="twin", label="mug"), ok, "mug", "twin"),
        Case("extra metadata fields", r(image=good, label="mug", price=3.5, seller={"id": 1}), ok, "mug"),
        # manifest lines
        Case("broken json", b'{"image": "images/good.jpg", "label": ', "bad_json"),
        Case("json array", b'["images/good.jpg", "mug"]', "bad_json"),
        Case("json string", b'"images/good.jpg"', "bad_json"),
        Case("json null", b"null", "bad_json"),
        Case("NUL bytes", b"\x00\x00\x00", "bad_json"),
        Case("binary garbage", bytes(range(128, 256)), "bad_text"),
        Case("duplicate keys (last wins)", b'{"image": "images/nope.jpg", "image": "' + good.encode()
             + b'", "label": "mug"}', ok, "mug"),
    ]
    with open(os.path.join(data, "train.jsonl"), "wb") as f:
        f.write(b"\n".join(c.line for c in cases) + b"\n\n\n")  # trailing blank lines: no records
    with open(os.path.join(data, "test.jsonl"), "wb") as f:
        f.write(b"\n".join(_record(image=good, label=lab) for lab in ("mug", "lamp")) + b"\n")
    return data, cases, outside


# Small enough to make the 300 KB file "too large"; generous bad share so the import completes.
IMPORT_FLAGS = ["--max-image-bytes", "200000", "--max-bad-fraction", "1", "--no-progress"]
IMPORT_CONFIG = {"max_image_bytes": 200_000, "max_bad_fraction": 1.0}


def read_examples(pattern: str) -> list[dict[str, bytes]]:
    import tensorflow as tf

    files = sorted(glob.glob(pattern))
    assert files, pattern
    out = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        out.append({k: v.bytes_list.value[0] for k, v in example.features.feature.items()})
    return out


def check_outcomes(cases: list[Case], examples: list[dict], quarantine: list[dict]) -> None:
    """Each case has exactly the expected outcome; every imported image decodes with TF."""
    import tensorflow as tf

    by_source = {f"train.jsonl:{i}": c for i, c in enumerate(cases, start=1)}
    got_ok = {e["record_id"].decode(): e for e in examples}
    got_bad = {q["source"]: q for q in quarantine if q["source"].startswith("train.jsonl:")}
    assert not set(got_ok) & set(got_bad), "a record is both imported and quarantined"
    assert set(got_ok) | set(got_bad) == set(by_source), "records lost or invented"
    wrong = []
    for source, case in by_source.items():
        if case.expect == "ok":
            if source not in got_ok:
                wrong.append(f"{case.name}: quarantined ({got_bad[source]['reason'][:200]})")
        elif source not in got_bad:
            wrong.append(f"{case.name}: imported, expected {case.expect}")
        elif got_bad[source]["reason"].split(":", 1)[0] != case.expect:
            wrong.append(f"{case.name}: {got_bad[source]['reason'][:200]!r}, expected {case.expect}")
    assert not wrong, "\n".join(wrong)

    for source, example in got_ok.items():
        case = by_source[source]
        assert set(example) == {"image", "title", "tags", "label", "record_id"}
        assert example["label"].decode("utf-8") == case.label, case.name
        if case.title is not None:
            assert example["title"].decode("utf-8") == case.title, case.name
        if case.tags is not None:
            assert example["tags"].decode("utf-8") == case.tags, case.name
        for key in ("title", "tags", "label"):
            text = example[key].decode("utf-8")
            assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in text), (case.name, key)
        pixels = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
        assert pixels.shape[0] > 0 and pixels.shape[1] > 0 and pixels.shape[2] == 3, case.name

    for source, entry in got_bad.items():
        # the raw record is kept, so that the record can be fixed and nothing is lost
        assert entry["record"], source
        raw = by_source[source].line.decode("utf-8", errors="backslashreplace")
        assert entry["record"] == raw, (source, entry["record"][:80], raw[:80])


@pytest.fixture(scope="module")
def fault_dataset(tmp_path_factory):
    return build_fault_dataset(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def imported(fault_dataset, tmp_path_factory):
    """`sicot import` over the fault dataset: (exit code, out dir)."""
    data, _, _ = fault_dataset
    out = tmp_path_factory.mktemp("imported")
    code = main(["import", "--data", data, "--out", str(out), *IMPORT_FLAGS])
    return code, str(out)


def _quarantine(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_sicot_import_accounts_for_every_fault(fault_dataset, imported):
    _, cases, _ = fault_dataset
    code, out = imported
    assert code == 0
    examples = read_examples(os.path.join(out, "train-*.tfrecord.gz"))
    quarantine = _quarantine(os.path.join(out, "quarantine.jsonl"))
    check_outcomes(cases, examples, quarantine)

    report = json.load(open(os.path.join(out, "import_report.json"), encoding="utf-8"))
    train = report["splits"]["train"]
    expected_bad = collections.Counter(c.expect for c in cases if c.expect != "ok")
    assert train["records"] == len(cases) == train["written"] + train["quarantined"]
    assert train["written"] == len(examples) == sum(c.expect == "ok" for c in cases)
    assert train["reasons"] == dict(expected_bad)
    assert report["splits"]["test"] == {"manifest": "test.jsonl", "records": 2, "written": 2,
                                        "quarantined": 0, "reasons": {}}
    assert not glob.glob(os.path.join(out, "*.partial"))


def test_too_many_faults_fail_the_import_without_losing_anything(fault_dataset, tmp_path, capsys):
    """With the default --max-bad-fraction the import stops with a clear message, writes no
    TFRecords, and keeps the quarantine (every bad record with its reason)."""
    data, cases, _ = fault_dataset
    out = tmp_path / "out"
    code = main(["import", "--data", data, "--out", str(out), "--max-image-bytes", "200000",
                 "--no-progress"])
    err = capsys.readouterr().err
    n_bad = sum(c.expect != "ok" for c in cases)
    assert code == 2
    assert f"train: {n_bad} of {len(cases)} records" in err, err
    assert "more than --max-bad-fraction 0.05; no TFRecords written" in err, err
    assert not glob.glob(str(out / "*.tfrecord.gz*"))
    assert len(_quarantine(str(out / "quarantine.jsonl"))) == n_bad


def test_absolute_paths_need_an_allowed_folder_and_relative_paths_never_leave(fault_dataset, tmp_path):
    """--allow-dir lets absolute paths into that folder; `..` stays refused (the rule in
    sicot.data.importer and docs/security.md)."""
    from sicot.data.importer import ImportConfig, import_dataset

    data, _, outside = fault_dataset
    folder = tmp_path / "allow"
    folder.mkdir()
    lines = [_record(image=os.path.join(outside, OUTSIDE_NAME), label="mug"),
             _record(image="../outside/" + OUTSIDE_NAME, label="mug"),
             _record(image=os.path.join(outside, "..", "outside", OUTSIDE_NAME), label="mug"),
             _record(image="/etc/hostname", label="mug")]
    os.symlink(os.path.join(data, "images"), folder / "images")
    (folder / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (folder / "test.jsonl").write_bytes(_record(image="images/good.jpg", label="mug") + b"\n")

    report = import_dataset(folder, tmp_path / "out",
                            ImportConfig(allowed_dirs=(outside,), max_bad_fraction=1.0), log=lambda *_: None)
    entries = {q["source"]: q["reason"] for q in _quarantine(str(report.quarantine_path))
               if q["source"].startswith("train")}
    assert report.splits["train"].written == 2
    assert sorted(entries) == ["train.jsonl:2", "train.jsonl:4"]
    assert all(r.startswith("path_outside: ") for r in entries.values()), entries
    # the images/ symlink points into the real dataset folder, outside this one: refused
    assert report.splits["test"].written == 0
    assert report.splits["test"].reasons == {"path_outside": 1}


def test_csv_faults_are_accounted_for(tmp_path):
    """A CSV manifest with a broken quote, bad UTF-8, wrong field counts and a field over the
    csv module's 131,072-character limit: each row imports or is quarantined with its reason,
    and the lines an unclosed quote swallows are kept in that row's quarantine entry."""
    from sicot.data.importer import ImportConfig, import_dataset

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    (data / "img" / "a.jpg").write_bytes(encode(1))
    long_title = " ".join(f"w{i}" for i in range(100_000))
    lines = [
        b"image,title,tags,label",
        b'img/a.jpg,"red, shiny ""mug""",a|b,mug',          # 2 ok: quotes and commas
        b'img/a.jpg,"multi\nline",,mug',                     # 3-4 ok: quoted newline
        b"img/a.jpg,caf\xe9,,mug",                           # 5 bad_text
        b'img/a.jpg,"bad"quote,,mug',                        # 6 bad_csv
        b"img/a.jpg,too,many,fields,here",                   # 7 bad_csv
        b"img/a.jpg",                                        # 8 bad_csv (too few)
        b'img/a.jpg,' + long_title.encode() + b',,mug',      # 9 bad_csv: field over the limit
        b"img/missing.jpg,,,mug",                            # 10 missing_image
        b"img/a.jpg,,,\t",                                   # 11 empty_label
        b"img/a.jpg,ok,,lamp",                               # 12 ok
        b'img/a.jpg,"never closed,,mug',                     # 13 bad_csv, swallows the rest
        b"img/a.jpg,swallowed,,mug",                         # 14 (inside 13's raw text)
    ]
    (data / "train.csv").write_bytes(b"\n".join(lines) + b"\n")
    (data / "test.csv").write_bytes(b"image,label\nimg/a.jpg,mug\n")
    report = import_dataset(data, tmp_path / "out", ImportConfig(max_bad_fraction=1.0),
                            log=lambda *_: None)
    counts = report.splits["train"]
    entries = {q["source"]: q for q in _quarantine(str(report.quarantine_path))}
    reasons = {s: q["reason"].split(":", 1)[0] for s, q in entries.items()}
    assert reasons == {"train.csv:5": "bad_text", "train.csv:6": "bad_csv", "train.csv:7": "bad_csv",
                       "train.csv:8": "bad_csv", "train.csv:9": "bad_csv", "train.csv:10": "missing_image",
                       "train.csv:11": "empty_label", "train.csv:13": "bad_csv"}, reasons
    assert counts.records == 11 == counts.written + counts.quarantined
    assert counts.written == 3
    assert "swallowed" in entries["train.csv:13"]["record"]
    assert "field larger than field limit" in entries["train.csv:9"]["reason"]
    assert "caf\\xe9" in entries["train.csv:5"]["record"]


def test_manifest_that_is_not_text_is_quarantined_line_by_line(tmp_path):
    """A train.jsonl that is really a JPEG: every line is a quarantined record, no crash."""
    from sicot.data.importer import ImportConfig, import_dataset

    data = tmp_path / "data"
    data.mkdir()
    blob = encode(5, size=(64, 64)) + bytes(range(256)) * 4
    (data / "train.jsonl").write_bytes(blob)
    (data / "test.jsonl").write_bytes(b"")
    report = import_dataset(data, tmp_path / "out", ImportConfig(max_bad_fraction=1.0),
                            log=lambda *_: None)
    lines = [l for l in blob.split(b"\n") if l.rstrip(b"\r").strip()]
    counts = report.splits["train"]
    assert counts.records == len(lines) == counts.quarantined and counts.written == 0
    assert set(counts.reasons) <= {"bad_text", "bad_json"}


@pytest.mark.slow
def test_example_gen_executor_agrees_with_sicot_import(fault_dataset, imported, tmp_path):
    """The same fault dataset through the pipeline's ManifestExampleGen (real component,
    LocalDagRunner, DirectRunner, SQLite MLMD): the same records imported, the same records
    quarantined with the same reason codes."""
    from tfx import v1 as tfx

    from sicot.pipeline import local_runner, run_summary
    from sicot.pipeline.manifest_example_gen import ManifestExampleGen

    data, cases, _ = fault_dataset
    root = str(tmp_path / "root")
    example_gen = ManifestExampleGen(input_base=data,
                                     split_files={"train": "train.jsonl", "test": "test.jsonl"},
                                     import_config=IMPORT_CONFIG)
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="faults", pipeline_root=root, components=[example_gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            local_runner.metadata_path(root)),
        beam_pipeline_args=["--direct_num_workers=1", "--direct_running_mode=in_memory"]))
    run = run_summary.latest_run(local_runner.metadata_path(root), "faults")["ManifestExampleGen"]
    assert run.state == "COMPLETE"
    uri = run.outputs["examples"][0]
    examples = read_examples(os.path.join(uri, "Split-train", "*.gz"))
    quarantine = _quarantine(os.path.join(uri, "quarantine.jsonl"))
    check_outcomes(cases, examples, quarantine)
    n_ok = sum(c.expect == "ok" for c in cases)
    assert run.properties["examples"]["examples_train"] == n_ok
    assert run.properties["examples"]["quarantined_train"] == len(cases) - n_ok

    _, out = imported
    by_import = {q["source"]: q["reason"] for q in _quarantine(os.path.join(out, "quarantine.jsonl"))}
    by_example_gen = {q["source"]: q["reason"] for q in quarantine}
    assert by_example_gen == by_import
