"""The catalogue format: new or updated SKUs described by their listing and 0..n photos.

    {"label": "...", "title": "...", "tags": ["..."], "images": ["images/a.jpg", ...]}

One SKU per line of a JSONL file (`sicot enroll --catalog FILE.jsonl`). `label` is required,
`title` and `tags` are optional (tags: a list or a '|'-separated string, as in the dataset
format), `images` is optional: 0..n paths relative to the catalogue file's folder (or absolute
inside it or an allowed folder), JPEG or PNG. Labels, text and images follow exactly the
importer's rules (`sicot.data.importer`: normalisation, path rule, size, pixel and decode
checks). Other fields are metadata and ignored.

Nothing is dropped silently. A line that cannot be used goes to the quarantine with a reason
(same codes as the importer's, plus `duplicate_label`: the label was already given on an
earlier line, which is kept). A bad photo of an otherwise good line goes to the quarantine on
its own (`record` = the line, `image` = the path, `reason`) and the SKU keeps its other
photos. Photos beyond `max_images` are kept in the report as `unused_images`, not enrolled.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Iterable

from sicot import contract
from sicot import paths as sicot_paths
from sicot.data import importer
from sicot.data.manifest import read_manifest
from sicot.errors import UserError

IMAGES_KEY = "images"
QUARANTINE_FILE = "catalogue_quarantine.jsonl"


@dataclasses.dataclass(frozen=True)
class CatalogueSku:
    """One usable catalogue line: normalised text and the bytes of its good photos."""

    source: str                 # "<file name>:<line number>"
    label: str
    title: str
    tags: str                   # '|'-joined, as in the raw tf.Example
    images: tuple[bytes, ...]   # encoded JPEG/PNG, in catalogue order
    image_paths: tuple[str, ...]  # as written in the catalogue, same order as `images`
    unused_images: int = 0      # good photos beyond max_images
    rejected_images: int = 0    # photos quarantined

    @property
    def item_ids(self) -> tuple[str, ...]:
        """Search item ids of this SKU's photos: '<label>/<photo path>'."""
        return tuple(f"{self.label}/{p}" for p in self.image_paths)


@dataclasses.dataclass
class Catalogue:
    path: pathlib.Path | str  # a local path, or the URL of a remote catalogue
    skus: list[CatalogueSku]
    quarantine: list[dict]      # {"source", "record", "reason"[, "image"]}
    lines: int                  # non-blank lines read

    def write_quarantine(self, path) -> pathlib.Path:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for entry in self.quarantine:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return path

    def summary(self) -> dict:
        reasons: dict[str, int] = {}
        for entry in self.quarantine:
            code = importer.reason_code(entry)
            reasons[code] = reasons.get(code, 0) + 1
        return {"catalogue": str(self.path), "lines": self.lines, "skus": len(self.skus),
                "photos": sum(len(s.images) for s in self.skus),
                "skus_without_photos": sum(1 for s in self.skus if not s.images),
                "unused_images": sum(s.unused_images for s in self.skus),
                "quarantined": len(self.quarantine), "quarantine_reasons": reasons}


def _image_paths(fields: dict) -> list[str]:
    value = fields.get(IMAGES_KEY)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise importer._Reject("bad_field: images must be a list of path strings")
    return value


def read_catalogue(path, config: importer.ImportConfig = importer.ImportConfig(),
                   max_images: int | None = None) -> Catalogue:
    """Parses and checks a catalogue file; never raises for a bad line (see the module doc).

    Raises UserError only when the file itself cannot be read. `path` may be a URL
    (gs://..., any tf.io.gfile scheme): its photos are then read relative to its folder URL."""
    if sicot_paths.is_remote(path):
        path = sicot_paths.normalize_url(str(path))
        if not sicot_paths.exists(path):
            raise UserError(f"--catalog {path}: no such file")
        folder = path.rsplit("/", 1)[0]
    else:
        path = pathlib.Path(path)
        if not path.is_file():
            raise UserError(f"--catalog {path}: no such file")
        folder = path.parent
    if max_images is not None and max_images < 0:
        raise UserError(f"--max-images-per-sku {max_images}: must be >= 0")
    skus: list[CatalogueSku] = []
    quarantine: list[dict] = []
    first_line: dict[str, str] = {}
    lines = 0
    for row in read_manifest(path):
        lines += 1
        try:
            if row.error is not None:
                raise importer._Reject(row.error)
            fields = row.fields
            label = importer._label_field(fields)
            title = importer._text_field(fields, contract.TITLE_KEY)
            tags = importer._tags_field(fields)
            paths = _image_paths(fields)
            if label in first_line:
                raise importer._Reject(f"duplicate_label: {label!r} is already given at "
                                       f"{first_line[label]}")
        except importer._Reject as reject:
            quarantine.append({"source": row.source, "record": row.raw, "reason": str(reject)})
            continue
        first_line[label] = row.source
        images, good_paths, unused, rejected = [], [], 0, 0
        for image in paths:
            try:
                if not image:
                    raise importer._Reject("missing_field: empty image path")
                importer._checked_unicode(image, "image")
                data = importer._read_image(image, folder, config)
            except importer._Reject as reject:
                quarantine.append({"source": row.source, "record": row.raw, "image": image,
                                   "reason": str(reject)})
                rejected += 1
                continue
            if max_images is not None and len(images) >= max_images:
                unused += 1
                continue
            images.append(data)
            good_paths.append(image)
        skus.append(CatalogueSku(row.source, label, title, tags, tuple(images),
                                 tuple(good_paths), unused, rejected))
    return Catalogue(path, skus, quarantine, lines)


def write_catalogue(path, skus: Iterable[dict]) -> pathlib.Path:
    """Writes catalogue lines ({"label", "title", "tags", "images"}) as JSONL."""
    path = pathlib.Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for sku in skus:
            f.write(json.dumps(sku, ensure_ascii=False) + "\n")
    return path
