"""The SICoT dataset format: a folder of manifests, one record per line.

    DATA/train.jsonl   required
    DATA/test.jsonl    required
    DATA/eval.jsonl    optional
    DATA/images/...    the images the records point to (any layout)

A JSON-lines record:
    {"image": "images/000123.jpg", "title": "...", "tags": ["...", "..."], "label": "..."}
`image` is a path relative to DATA (or absolute, see `sicot.data.importer` for the path rule),
`title` and `tags` are optional (tags: a list or a '|'-separated string), `label` is any
non-empty class name; other fields are metadata that training ignores. CSV files
(`train.csv`, ...) with a header row naming the same columns are accepted too; when both exist
the `.jsonl` file wins. Images are JPEG or PNG of any size.

`read_manifest` never raises on a bad record: it yields a `ManifestRow` with `error` set (a
stable short code, a colon, then detail), so that the importer can quarantine it and go on.

Record order: exports are often grouped by SKU or appended day by day. The writers
(`sicot import`, the pipeline's ManifestExampleGen) put the rows of a split in a seeded
random order with `permuted` before converting them, so the examples they write are mixed
whatever order the manifest holds (the trainer's shuffle then needs no split-sized buffer to
mix them; see `sicot.trainer.input`). A row keeps its `source` (file and line) for tracing.
"""
from __future__ import annotations

import csv
import io
import json
import pathlib
from dataclasses import dataclass
from typing import Iterator

from sicot import contract, paths
from sicot.errors import UserError
from sicot.paths import is_remote, normalize_url

REQUIRED_SPLITS = (contract.TRAIN_SPLIT, contract.TEST_SPLIT)
MANIFEST_SUFFIXES = (".jsonl", ".csv")  # in order of preference


@dataclass(frozen=True)
class ManifestRow:
    source: str               # "<manifest file name>:<line number>", e.g. "train.jsonl:12"
    fields: dict | None       # the parsed record, None when it could not be parsed
    error: str | None         # "<code>: <detail>" when the record could not be parsed
    raw: str                  # the record's text as read (invalid UTF-8 shown as \\x.. escapes)



def find_split_files(data_dir) -> dict[str, pathlib.Path | str]:
    """Split name -> manifest path, for the splits present in `data_dir`: a `pathlib.Path`
    for a local folder, a URL string for a remote one (gs://..., any tf.io.gfile scheme)."""
    if is_remote(data_dir):
        data_dir = normalize_url(str(data_dir))
        if not paths.isdir(data_dir):
            raise UserError(f"data folder {data_dir} does not exist or is not a folder")

        def manifest(name):
            path = data_dir + "/" + name
            return path if paths.exists(path) and not paths.isdir(path) else None
    else:
        data_dir = pathlib.Path(data_dir)
        if not data_dir.is_dir():
            raise UserError(f"data folder {data_dir} does not exist or is not a folder")

        def manifest(name):
            path = data_dir / name
            return path if path.is_file() else None
    found = {}
    for split in contract.SPLITS:
        for suffix in MANIFEST_SUFFIXES:
            path = manifest(split + suffix)
            if path is not None:
                found[split] = path
                break
    missing = [s for s in REQUIRED_SPLITS if s not in found]
    if missing:
        names = " or ".join(f"{s}.jsonl/{s}.csv" for s in missing)
        raise UserError(f"data folder {data_dir} has no {names} manifest "
                          "(a dataset needs train and test manifests)")
    return found


def read_manifest(path) -> Iterator[ManifestRow]:
    """One `ManifestRow` per record of a .jsonl or .csv manifest (a local path or a URL);
    blank lines are skipped."""
    if is_remote(path):
        try:
            data = paths.read_bytes(path)
        except OSError as e:
            raise UserError(f"manifest {path} cannot be read: {e}") from e
        name = str(path).rsplit("/", 1)[-1]
    else:
        path = pathlib.Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UserError(f"manifest {path} cannot be read: {e.strerror or e}") from e
        name = path.name
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
        data = data[3:]
    if name.endswith(".csv"):
        yield from _read_csv(name, data)
    else:
        yield from _read_jsonl(name, data)


def permuted(rows, seed: int = 0) -> list[ManifestRow]:
    """The rows in a random order drawn from `seed` (same rows and seed -> same order).

    Holds the rows' text in memory (a few hundred bytes a row: images are read later).
    """
    import random

    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def _escaped(line: bytes) -> str:
    return line.decode("utf-8", errors="backslashreplace")


def _read_jsonl(name: str, data: bytes) -> Iterator[ManifestRow]:
    for number, line in enumerate(data.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        source = f"{name}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield ManifestRow(source, None, f"bad_text: invalid UTF-8 at byte {e.start}", _escaped(line))
            continue
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as e:
            yield ManifestRow(source, None, f"bad_json: {e.msg} at column {e.colno}", text)
            continue
        if not isinstance(fields, dict):
            yield ManifestRow(source, None,
                              f"bad_json: a record must be a JSON object, got {type(fields).__name__}", text)
            continue
        yield ManifestRow(source, fields, None, text)


def _read_csv(name: str, data: bytes) -> Iterator[ManifestRow]:
    # surrogateescape keeps invalid bytes as lone surrogates, found per field below, so one
    # bad record does not stop the file.
    text = data.decode("utf-8", errors="surrogateescape")
    lines: list[str] = []

    def tracked():
        for line in io.StringIO(text, newline=""):
            lines.append(line)
            yield line

    reader = csv.reader(tracked(), strict=True)
    header = None
    while True:
        first_line = len(lines) + 1
        start = len(lines)
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raw = "".join(lines[start:])
            # The reader resumes on the next line; an unclosed quote runs to the end of the
            # file, and all those lines are kept in this one row's raw text.
            yield ManifestRow(f"{name}:{first_line}", None, f"bad_csv: {e}", _safe(raw.rstrip("\r\n")))
            continue
        raw = "".join(lines[start:]).rstrip("\r\n")
        source = f"{name}:{first_line}"
        if header is None:
            header = [c.strip() for c in cells]
            if header and header[0].startswith("\ufeff"):
                header[0] = header[0][1:]
            continue
        if not any(c.strip() for c in cells):
            continue
        if _has_surrogates(raw):
            bad = [h for h, c in zip(header, cells) if _has_surrogates(c)] or ["?"]
            yield ManifestRow(source, None, f"bad_text: invalid UTF-8 in column {', '.join(bad)}", _safe(raw))
            continue
        if len(cells) != len(header):
            yield ManifestRow(source, None,
                              f"bad_csv: expected {len(header)} fields ({','.join(header)}), got {len(cells)}", raw)
            continue
        yield ManifestRow(source, dict(zip(header, cells)), None, raw)


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _safe(s: str) -> str:
    return s.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
