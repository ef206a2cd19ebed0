import pytest

from sicot.errors import UserError
from sicot.data.manifest import ManifestRow, find_split_files, read_manifest


def test_find_split_files_prefers_jsonl_and_needs_train_and_test(tmp_path):
    (tmp_path / "train.csv").write_text("image,label\n")
    (tmp_path / "train.jsonl").write_text("")
    (tmp_path / "test.csv").write_text("image,label\n")
    found = find_split_files(tmp_path)
    assert found == {"train": tmp_path / "train.jsonl", "test": tmp_path / "test.csv"}
    (tmp_path / "eval.jsonl").write_text("")
    assert set(find_split_files(tmp_path)) == {"train", "eval", "test"}


def test_find_split_files_names_the_folder_and_the_missing_manifest(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(UserError, match=rf"{tmp_path} has no test.jsonl/test.csv manifest"):
        find_split_files(tmp_path)
    with pytest.raises(UserError, match="does not exist or is not a folder"):
        find_split_files(tmp_path / "nope")


def test_read_jsonl_yields_every_record_with_its_line_and_never_raises(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(
        b'{"image": "a.jpg", "label": "x"}\n'
        b'\n'                                   # blank lines are not records
        b'{"image": "b.jpg", "label": \n'       # broken JSON
        b'[1, 2]\n'                             # not an object
        b'{"image": "c.jpg", "label": "caf\xe9"}\n'  # Latin-1, not UTF-8
        b'{"image": "d.jpg", "label": "\xe7\x8c\xab"}\r\n')  # CRLF, UTF-8 cat
    rows = list(read_manifest(path))
    assert [r.source for r in rows] == ["train.jsonl:1", "train.jsonl:3", "train.jsonl:4",
                                        "train.jsonl:5", "train.jsonl:6"]
    assert rows[0] == ManifestRow("train.jsonl:1", {"image": "a.jpg", "label": "x"}, None,
                                  '{"image": "a.jpg", "label": "x"}')
    assert rows[1].fields is None and rows[1].error.startswith("bad_json: ")
    assert rows[1].raw == '{"image": "b.jpg", "label": '
    assert rows[2].error == "bad_json: a record must be a JSON object, got list"
    assert rows[3].error.startswith("bad_text: invalid UTF-8") and "\\xe9" in rows[3].raw
    assert rows[4].fields == {"image": "d.jpg", "label": "猫"}


def test_read_csv_with_bad_quoting_bad_utf8_and_wrong_field_count(tmp_path):
    path = tmp_path / "test.csv"
    path.write_bytes(
        b'\xef\xbb\xbfimage,title,tags,label\n'  # byte-order mark before the header
        b'a.jpg,"red, shiny mug",red|mug,x\n'
        b'b.jpg,"multi\nline title",,y\n'
        b'c.jpg,caf\xe9,,z\n'
        b'd.jpg,"bad"quote,,w\n'
        b'e.jpg,too,many,fields,here\n'
        b'\n'
        b'f.jpg,ok,,v\n')
    rows = list(read_manifest(path))
    by_source = {r.source: r for r in rows}
    assert list(by_source) == ["test.csv:2", "test.csv:3", "test.csv:5", "test.csv:6",
                               "test.csv:7", "test.csv:9"]
    assert by_source["test.csv:2"].fields == {"image": "a.jpg", "title": "red, shiny mug",
                                              "tags": "red|mug", "label": "x"}
    assert by_source["test.csv:3"].fields["title"] == "multi\nline title"
    assert by_source["test.csv:5"].error == "bad_text: invalid UTF-8 in column title"
    assert by_source["test.csv:5"].raw == "c.jpg,caf\\xe9,,z"
    assert by_source["test.csv:6"].error.startswith("bad_csv: ")
    assert by_source["test.csv:7"].error.startswith("bad_csv: expected 4 fields")
    assert by_source["test.csv:9"].fields["label"] == "v"


def test_unclosed_quote_keeps_the_rest_of_the_file_in_one_bad_row(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('image,label\na.jpg,x\n"b.jpg,y\nc.jpg,z\n')
    rows = list(read_manifest(path))
    assert rows[0].fields == {"image": "a.jpg", "label": "x"}
    assert rows[1].source == "train.csv:3" and rows[1].error.startswith("bad_csv: ")
    assert "c.jpg,z" in rows[1].raw  # nothing is lost: the swallowed line is in the raw text
    assert len(rows) == 2
