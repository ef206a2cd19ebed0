"""Property-based tests (hypothesis) of the text normalisation, the manifest readers and the
per-record conversion: any byte string or JSON value is accounted for and never crashes.
"""
from __future__ import annotations

import io
import json
import os
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sicot.data.importer import ImportConfig, convert_row, normalize_text
from sicot.data.manifest import ManifestRow, read_manifest

FAST = settings(max_examples=300, deadline=None)
SLOWER = settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Text with the characters that cause trouble: controls, format characters, combining marks,
# odd spaces, CJK, surrogates, and the separators the formats use.
tricky = st.sampled_from(list("\x00\x07\t\n\r\x1b\x85\xa0\u2028\u2029\u200b\u200d\ufeff\u202e"
                              "\u0301\u0308\u3000 e\u00e9|,\"'\\{}[]:\u732b\U0001F600"))
texts = st.text(alphabet=st.one_of(tricky, st.characters()), max_size=40)


def _is_control(ch: str) -> bool:
    return ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029"


@FAST
@given(texts)
@example("e\u200d\u0301")  # a combining accent behind a zero-width joiner
@example("Cafe\u0301\ufeff")
@example("\u00a0\u3000x\u2028y\x85")
def test_normalize_text_output_is_clean_and_stable(text):
    out = normalize_text(text)
    assert isinstance(out, str)
    assert not any(_is_control(ch) for ch in out)
    assert not any(unicodedata.category(ch) == "Cf" for ch in out)
    assert out == out.strip() and "  " not in out
    assert not any(ch.isspace() and ch != " " for ch in out)
    assert normalize_text(out) == out  # idempotent: normalising a label twice changes nothing
    # NFC, so that composed and decomposed spellings of one label are one class
    if all(not 0xD800 <= ord(ch) <= 0xDFFF for ch in out):
        assert unicodedata.is_normalized("NFC", out)


@FAST
@given(st.lists(st.binary(max_size=60), max_size=12))
def test_jsonl_reader_accounts_for_every_nonblank_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("jsonl") / "train.jsonl"
    data = b"\n".join(lines)
    path.write_bytes(data)
    rows = list(read_manifest(path))
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    expected = [i for i, line in enumerate(data.split(b"\n"), start=1)
                if line.rstrip(b"\r").strip()]
    assert [r.source for r in rows] == [f"train.jsonl:{i}" for i in expected]
    for row in rows:
        _check_row(row)


@FAST
@given(st.lists(st.binary(max_size=60), max_size=12))
def test_csv_reader_never_raises_and_keeps_every_byte(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("csv") / "train.csv"
    data = b"image,title,tags,label\n" + b"\n".join(lines)
    path.write_bytes(data)
    rows = list(read_manifest(path))
    numbers = [int(r.source.rsplit(":", 1)[1]) for r in rows]
    assert numbers == sorted(set(numbers))
    line_breaks = len(re.findall(rb"\r\n|\r|\n", data))  # the csv module's line ends
    assert all(2 <= n <= line_breaks + 1 for n in numbers)
    for row in rows:
        _check_row(row)


def _check_row(row: ManifestRow) -> None:
    assert (row.fields is None) != (row.error is None), row
    if row.error is not None:
        assert row.error.split(":", 1)[0] in ("bad_json", "bad_text", "bad_csv"), row.error
    else:
        assert isinstance(row.fields, dict)
    row.raw.encode("utf-8")  # the raw text can always be written to the quarantine file


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=6)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("prop_data")
    (root / "images").mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (200, 30, 30)).save(buffer, format="JPEG")
    (root / "images" / "ok.jpg").write_bytes(buffer.getvalue())
    (root / "images" / "bad.jpg").write_bytes(buffer.getvalue()[:50])
    os.symlink("/etc/hostname", root / "images" / "out.jpg")
    return root


image_values = st.one_of(
    st.sampled_from(["images/ok.jpg", "images/bad.jpg", "images/out.jpg", "images/none.jpg",
                     "images", "../x.jpg", "/etc/passwd", "", "images/ok.jpg\x00"]),
    texts, json_values)


@SLOWER
@given(image=image_values, title=st.one_of(texts, json_values), tags=st.one_of(texts, json_values),
       label=st.one_of(texts, json_values), drop=st.sets(st.sampled_from(["image", "title", "tags", "label"])))
def test_convert_row_never_raises_and_gives_exactly_one_outcome(data_dir, image, title, tags, label, drop):
    fields = {"image": image, "title": title, "tags": tags, "label": label}
    for key in drop:
        del fields[key]
    try:
        raw = json.dumps(fields, ensure_ascii=False)
    except (ValueError, UnicodeEncodeError):
        raw = repr(fields)
    row = ManifestRow("train.jsonl:1", fields, None, raw)
    example, entry = convert_row(row, data_dir, ImportConfig())
    assert (example is None) != (entry is None)
    if entry is not None:
        assert entry["source"] == "train.jsonl:1" and entry["record"] == raw
        code = entry["reason"].split(":", 1)[0]
        assert code in {"missing_field", "bad_field", "bad_text", "empty_label", "path_outside",
                        "missing_image", "unreadable_image", "image_too_large", "not_image",
                        "too_many_pixels", "corrupt_image"}, entry["reason"]
        # the quarantine line can always be written as UTF-8 JSON and read back
        line = json.dumps(entry, ensure_ascii=False).encode("utf-8")
        assert json.loads(line) == entry
    else:
        import tensorflow as tf

        parsed = tf.train.Example.FromString(example).features.feature
        assert os.path.realpath(os.path.join(data_dir, image)) == os.path.realpath(
            data_dir / "images" / "ok.jpg")
        assert parsed["label"].bytes_list.value[0].decode("utf-8") == normalize_text(str(label))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.one_of(
    st.fixed_dictionaries({"image": st.sampled_from(["images/ok.jpg", "images/bad.jpg", "x.jpg"]),
                           "label": st.one_of(texts, json_values)}),
    json_values, st.binary(max_size=30)), max_size=8))
def test_import_totals_add_up_for_any_manifest(data_dir, tmp_path_factory, records):
    """Through import_dataset (TFRecords + quarantine): records = written + quarantined, and
    the files hold exactly those numbers."""
    from sicot.data.importer import import_dataset

    root = tmp_path_factory.mktemp("prop_import")
    lines = []
    for record in records:
        if isinstance(record, bytes):
            lines.append(record.replace(b"\n", b" "))
        else:
            try:
                lines.append(json.dumps(record, ensure_ascii=False).encode("utf-8"))
            except UnicodeEncodeError:
                lines.append(json.dumps(record).encode("utf-8"))
    (root / "images").mkdir()
    for name in ("ok.jpg", "bad.jpg"):
        (root / "images" / name).write_bytes((data_dir / "images" / name).read_bytes())
    (root / "train.jsonl").write_bytes(b"\n".join(lines))
    (root / "test.jsonl").write_bytes(b"")
    config = ImportConfig(max_bad_fraction=1.0)
    report = import_dataset(root, root / "out", config, log=lambda *_: None)
    counts = report.splits["train"]
    nonblank = sum(1 for line in lines if line.rstrip(b"\r").strip())
    assert counts.records == nonblank == counts.written + counts.quarantined
    assert sum(counts.reasons.values()) == counts.quarantined
    with open(report.quarantine_path, encoding="utf-8") as f:
        assert sum(1 for line in f if line.strip()) == counts.quarantined
    import tensorflow as tf

    written = sum(1 for _ in tf.data.TFRecordDataset(str(report.tfrecord_path("train")),
                                                     compression_type="GZIP"))
    assert written == counts.written
