"""Import a dataset folder (see `sicot.data.manifest`) into GZIP TFRecords of `tf.Example`.

    sicot import --data data/synth --out data/synth-tfrecords

`convert_row` is the pure per-record core, also called by the pipeline's ExampleGen: it turns
one `ManifestRow` into a serialized `tf.Example` (features as in `sicot.contract`) or a
quarantine entry {"source", "record", "reason"}. `import_dataset` runs it over every split and
writes `<split>-00000-of-00001.tfrecord.gz`, `quarantine.jsonl` and `import_report.json`.
Every input record ends up either in a TFRecord file or in quarantine with a reason.

Quarantine reasons are a stable short code, a colon, then detail:
    bad_json, bad_csv, bad_text   the manifest line could not be parsed (invalid UTF-8 included)
    missing_field, bad_field      no image or label, or a field of the wrong type
    empty_label                   the label is empty after normalisation
    path_outside                  the image path leaves the allowed folders (rule below)
    missing_image                 the image file does not exist
    unreadable_image              the image path is not a readable file
    image_too_large               the file is larger than `max_image_bytes`
    not_image                     the bytes are not JPEG or PNG (checked by content, not name)
    too_many_pixels               width x height from the header exceeds `max_pixels`; checked
                                  before any decoding, so a decompression bomb is never decoded
    corrupt_image                 the image does not fully decode (truncated or damaged), in
                                  PIL and in TensorFlow's decode_image (what Transform runs)

Path rule: a relative image path is joined to the dataset folder and resolved (`..` and
symlinks followed); the result must lie inside the resolved dataset folder. An absolute path is
resolved the same way and must lie inside the dataset folder or inside one of
`ImportConfig.allowed_dirs` (`--allow-dir`, repeatable). The rule is checked before the file
is touched, so records cannot probe files outside those folders.

Text normalisation (title, each tag, label): control characters become spaces and
invisible format characters (zero-width space, byte-order mark...) are removed; runs of
whitespace collapse to one space; leading and trailing space is stripped; then Unicode NFC
(repeated until stable). Tags are a list of strings or one '|'-separated string; empty tags
are dropped and the rest joined with '|'.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import re
import struct
import unicodedata
import warnings
from dataclasses import asdict, dataclass, field

from sicot import console, contract, paths
from sicot.data.manifest import ManifestRow, find_split_files, permuted, read_manifest
from sicot.errors import UserError

TFRECORD_PATTERN = "{split}-00000-of-00001.tfrecord.gz"
QUARANTINE_FILE = "quarantine.jsonl"
REPORT_FILE = "import_report.json"



@dataclass(frozen=True)
class ImportConfig:
    max_pixels: int = 40_000_000         # width x height, read from the header
    max_image_bytes: int = 32 << 20      # file size
    allowed_dirs: tuple[str, ...] = ()   # extra roots for absolute image paths
    max_bad_fraction: float = 0.05       # per split: quarantined / records
    order_seed: int = 0                  # records are written in a random order from this seed

    def validate(self) -> None:
        if self.max_pixels < 1:
            raise UserError(f"--max-pixels must be >= 1, got {self.max_pixels}")
        if self.max_image_bytes < 1:
            raise UserError(f"--max-image-bytes must be >= 1, got {self.max_image_bytes}")
        if not 0 <= self.max_bad_fraction <= 1:
            raise UserError(f"--max-bad-fraction must be in [0, 1], got {self.max_bad_fraction}")
        for d in self.allowed_dirs:
            if paths.is_remote(d):
                import tensorflow as tf

                if not tf.io.gfile.isdir(d):
                    raise UserError(f"--allow-dir {d} is not an existing folder")
            elif not os.path.isabs(d) or not os.path.isdir(d):
                raise UserError(f"--allow-dir {d} must be an absolute path to an existing folder")


class _Reject(Exception):
    """A record that goes to quarantine; the message is '<code>: <detail>'."""


# ---------------------------------------------------------------------------------------------
# Text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _clean(text: str) -> str:
    text = _CONTROL.sub(" ", text)
    if not text.isascii():
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(text.split())


def normalize_text(text: str) -> str:
    """Clean, then NFC; repeated until stable, because removing a character can bring two
    composable ones together ("e", zero-width joiner, combining acute -> "é")."""
    while True:
        text = _clean(text)
        if unicodedata.is_normalized("NFC", text):
            return text
        text = unicodedata.normalize("NFC", text)


def _text_field(fields: dict, key: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Reject(f"bad_field: {key} must be a string, got {type(value).__name__}")
    return _checked_unicode(normalize_text(value), key)


def _checked_unicode(text: str, key: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON "\\ud800" escape
        raise _Reject(f"bad_text: {key} holds an unpaired surrogate, not valid Unicode") from None
    return text


def _tags_field(fields: dict) -> str:
    value = fields.get(contract.TAGS_KEY)
    if value is None:
        return ""
    if isinstance(value, str):
        parts = value.split(contract.TAG_SEPARATOR)
    elif isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise _Reject("bad_field: tags must be a list of strings or a '|'-separated string")
        parts = [p for v in value for p in v.split(contract.TAG_SEPARATOR)]
    else:
        raise _Reject(f"bad_field: tags must be a list or a string, got {type(value).__name__}")
    tags = [normalize_text(p) for p in parts]
    return _checked_unicode(contract.TAG_SEPARATOR.join(t for t in tags if t), "tags")


def _label_field(fields: dict) -> str:
    value = fields.get(contract.LABEL_KEY)
    if value is None:
        raise _Reject("missing_field: no label")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Reject(f"bad_field: label must be a string, got {type(value).__name__}")
    label = _checked_unicode(normalize_text(str(value)), "label")
    if not label:
        raise _Reject("empty_label: the label is empty after removing whitespace")
    return label


# ---------------------------------------------------------------------------------------------
# Images

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (all SOFn except DHT C4, JPG C8, DAC CC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def sniff_format(data: bytes) -> str | None:
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    return None


def header_dimensions(data: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) from the PNG IHDR chunk or the JPEG frame header, without decoding.
    Raises ValueError when the header is damaged."""
    if fmt == "PNG":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("PNG has no IHDR header")
        return struct.unpack(">II", data[16:24])
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("JPEG has no frame header before its image data")
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    raise ValueError("JPEG header is truncated")


def _resolve_image_path(image: str, data_dir: pathlib.Path, config: ImportConfig) -> pathlib.Path:
    root = data_dir.resolve()
    path = pathlib.Path(image)
    if path.is_absolute():
        resolved = path.resolve()
        roots = [root] + [pathlib.Path(d).resolve() for d in config.allowed_dirs]
        if not any(resolved.is_relative_to(r) for r in roots):
            raise _Reject(f"path_outside: {image} is not inside the dataset folder or an --allow-dir folder")
    else:
        resolved = (root / path).resolve()
        if not resolved.is_relative_to(root):
            raise _Reject(f"path_outside: {image} resolves to {resolved}, outside the dataset folder")
    return resolved


def _resolve_remote_image_path(image: str, data_dir: str, config: ImportConfig) -> str:
    """The path rule for URLs (object stores have no symlinks; `..` is resolved textually)."""
    roots = [d for d in (data_dir, *config.allowed_dirs) if paths.is_remote(d)]
    if paths.is_remote(image):
        resolved = paths.normalize_url(image)
        if not any(paths.is_inside(resolved, r) for r in roots):
            raise _Reject(f"path_outside: {image} is not inside the dataset folder or an "
                          f"--allow-dir folder")
        return resolved
    resolved = paths.join_url(data_dir, image)
    if image.startswith("/") or not paths.is_inside(resolved, data_dir):
        raise _Reject(f"path_outside: {image} resolves to {resolved}, outside the dataset folder")
    return resolved


def _read_remote_image(image: str, data_dir: str, config: ImportConfig) -> bytes:
    path = _resolve_remote_image_path(image, data_dir, config)
    try:
        if not paths.exists(path):
            raise _Reject(f"missing_image: {image} does not exist")
        size = paths.size(path)
        if size > config.max_image_bytes:
            raise _Reject(f"image_too_large: {image} has {size} bytes, more than the limit {config.max_image_bytes}")
        return paths.read_bytes(path)
    except OSError as e:
        raise _Reject(f"unreadable_image: {image}: {str(e)[-200:]}") from None


def _read_image(image: str, data_dir, config: ImportConfig) -> bytes:
    if "\x00" in image:
        raise _Reject("bad_field: image path contains a NUL character")
    if paths.is_remote(data_dir) or paths.is_remote(image):
        if not paths.is_remote(data_dir) and not any(paths.is_remote(d) for d in config.allowed_dirs):
            raise _Reject(f"path_outside: {image} is not inside the dataset folder or an --allow-dir folder")
        data = _read_remote_image(image, str(data_dir), config)
        return _checked_image(image, data, config)
    data_dir = pathlib.Path(data_dir)
    try:
        path = _resolve_image_path(image, data_dir, config)
        if not path.exists():
            raise _Reject(f"missing_image: {image} does not exist")
        if not path.is_file():
            raise _Reject(f"unreadable_image: {image} is not a regular file")
        size = path.stat().st_size
        if size > config.max_image_bytes:
            raise _Reject(f"image_too_large: {image} has {size} bytes, more than the limit {config.max_image_bytes}")
        data = path.read_bytes()
    except OSError as e:
        raise _Reject(f"unreadable_image: {image}: {e.strerror or e}") from None
    except RuntimeError as e:  # pathlib (Python 3.10) reports a symlink loop this way
        raise _Reject(f"unreadable_image: {image}: {e}") from None
    return _checked_image(image, data, config)


def _checked_image(image: str, data: bytes, config: ImportConfig) -> bytes:
    fmt = sniff_format(data)
    if fmt is None:
        raise _Reject(f"not_image: {image} is not JPEG or PNG (starts with {data[:8].hex() or 'nothing'})")
    try:
        width, height = header_dimensions(data, fmt)
    except ValueError as e:
        raise _Reject(f"corrupt_image: {image}: {e}") from None
    if width * height > config.max_pixels:
        raise _Reject(f"too_many_pixels: {image} is {width}x{height} = {width * height} pixels, "
                      f"more than the limit {config.max_pixels}")
    if width == 0 or height == 0:
        raise _Reject(f"corrupt_image: {image} is {width}x{height}")
    _check_decodes(data, image, fmt, (width, height))
    return data


def _check_decodes(data: bytes, image: str, fmt: str, size: tuple[int, int]) -> None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as img:
                img.load()  # full decode: truncated or damaged data raises here
                decoded = img.size
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad data
        raise _Reject(f"corrupt_image: {image} does not decode: {e}") from None
    if decoded != size:
        raise _Reject(f"corrupt_image: {image} header says {size}, decoded {decoded}")
    # And with the op Transform runs (sicot.trainer.transform.preprocessing): TensorFlow is stricter than
    # PIL in places (a PNG without IEND decodes in PIL, not in TF), and one image it cannot
    # decode would stop a Transform over millions of good ones.
    import tensorflow as tf

    try:
        tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        raise _Reject(f"corrupt_image: {image} does not decode in TensorFlow: "
                      f"{e.message.splitlines()[0][-200:]}") from None


# ---------------------------------------------------------------------------------------------
# Records


def _example_bytes(values: dict[str, bytes]) -> bytes:
    import tensorflow as tf

    feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v])) for k, v in values.items()}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def convert_row(row: ManifestRow, data_dir, config: ImportConfig = ImportConfig()
                ) -> tuple[bytes | None, dict | None]:
    """(serialized tf.Example, None) for a good record, (None, quarantine entry) for a bad one.
    Never raises for bad data."""
    try:
        if row.error is not None:
            raise _Reject(row.error)
        fields = row.fields
        image = fields.get(contract.IMAGE_KEY)
        if image is None or image == "":
            raise _Reject("missing_field: no image path")
        if not isinstance(image, str):
            raise _Reject(f"bad_field: image must be a path string, got {type(image).__name__}")
        _checked_unicode(image, "image")
        label = _label_field(fields)
        title = _text_field(fields, contract.TITLE_KEY)
        tags = _tags_field(fields)
        image_bytes = _read_image(image, data_dir, config)
    except _Reject as reject:
        return None, {"source": row.source, "record": row.raw, "reason": str(reject)}
    return _example_bytes({
        contract.IMAGE_KEY: image_bytes,
        contract.TITLE_KEY: title.encode("utf-8"),
        contract.TAGS_KEY: tags.encode("utf-8"),
        contract.LABEL_KEY: label.encode("utf-8"),
        contract.RECORD_ID_KEY: row.source.encode("utf-8"),
    }), None


def reason_code(entry: dict) -> str:
    return entry["reason"].split(":", 1)[0]


@dataclass
class SplitCounts:
    manifest: str
    records: int = 0
    written: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def bad_fraction(self) -> float:
        return self.quarantined / self.records if self.records else 0.0


@dataclass(frozen=True)
class ImportReport:
    out_dir: pathlib.Path | str  # a str URL for a remote output folder
    splits: dict[str, SplitCounts]
    quarantine_path: pathlib.Path | str

    def tfrecord_path(self, split: str) -> pathlib.Path | str:
        name = TFRECORD_PATTERN.format(split=split)
        if isinstance(self.out_dir, str):
            return self.out_dir + "/" + name
        return self.out_dir / name


def _folder(path):
    """A local folder as an absolute `pathlib.Path`, a URL normalised (str)."""
    return paths.normalize_url(str(path)) if paths.is_remote(path) else pathlib.Path(path).resolve()


def _child(folder, name):
    return folder + "/" + name if isinstance(folder, str) else folder / name


def import_dataset(data_dir, out_dir, config: ImportConfig = ImportConfig(), log=print,
                   progress: bool = False) -> ImportReport:
    """Convert every split of `data_dir` and write TFRecords, quarantine and report to `out_dir`.
    Both may be local folders or URLs (gs://...: every read and write goes through
    tf.io.gfile). Raises UserError (after writing the quarantine and report, and without
    leaving TFRecords) when a split's bad share exceeds `config.max_bad_fraction`."""
    import tensorflow as tf

    config.validate()
    manifests = find_split_files(data_dir)
    data_dir, out_dir = _folder(data_dir), _folder(out_dir)
    if out_dir == data_dir:
        raise UserError(f"--out {out_dir} must not be the data folder itself")
    tf.io.gfile.makedirs(str(out_dir))
    for split in contract.SPLITS:  # no stale output from an earlier import
        stale = str(_child(out_dir, TFRECORD_PATTERN.format(split=split)))
        if tf.io.gfile.exists(stale):
            tf.io.gfile.remove(stale)

    splits: dict[str, SplitCounts] = {}
    partial: list[str] = []
    quarantine_path = _child(out_dir, QUARANTINE_FILE)
    with tf.io.gfile.GFile(str(quarantine_path), "w") as quarantine:
        quarantine.write("")  # GFile creates the file on the first write: empty means no bad record
        for split, manifest in manifests.items():
            manifest_name = str(manifest).rsplit("/", 1)[-1]
            counts = splits[split] = SplitCounts(manifest_name)
            tmp = str(_child(out_dir, TFRECORD_PATTERN.format(split=split) + ".partial"))
            partial.append(tmp)
            with tf.io.TFRecordWriter(tmp, options="GZIP") as writer:
                rows = console.progress(permuted(read_manifest(manifest), config.order_seed),
                                        desc=f"import {split}", unit="rec",
                                        disable=not progress, mininterval=1)
                for row in rows:
                    counts.records += 1
                    example, entry = convert_row(row, data_dir, config)
                    if example is not None:
                        writer.write(example)
                        counts.written += 1
                    else:
                        quarantine.write(json.dumps(entry, ensure_ascii=False) + "\n")
                        counts.quarantined += 1
                        code = reason_code(entry)
                        counts.reasons[code] = counts.reasons.get(code, 0) + 1
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(counts.reasons.items(), key=lambda kv: -kv[1]))
            log(f"sicot import: {split} ({manifest_name}): {counts.records} records, "
                f"{counts.written} written, {counts.quarantined} quarantined"
                + (f" ({reasons})" if reasons else ""))

    report = {"data_dir": str(data_dir), "config": asdict(config),
              "splits": {s: asdict(c) for s, c in splits.items()}}
    with tf.io.gfile.GFile(str(_child(out_dir, REPORT_FILE)), "w") as f:
        f.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    too_bad = [(s, c) for s, c in splits.items() if c.bad_fraction > config.max_bad_fraction]
    if too_bad:
        for tmp in partial:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
        detail = "; ".join(
            f"{s}: {c.quarantined} of {c.records} records ({c.bad_fraction:.1%}) are bad ("
            + ", ".join(f"{k} {v}" for k, v in sorted(c.reasons.items(), key=lambda kv: -kv[1])) + ")"
            for s, c in too_bad)
        raise UserError(f"data folder {data_dir}: {detail}, more than --max-bad-fraction "
                          f"{config.max_bad_fraction}; no TFRecords written, reasons per record "
                          f"in {quarantine_path}")
    for tmp in partial:
        tf.io.gfile.rename(tmp, tmp[: -len(".partial")], overwrite=True)
    return ImportReport(out_dir, splits, quarantine_path)
