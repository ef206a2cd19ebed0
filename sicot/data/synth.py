"""`sicot synth`: a procedural long-tailed product data set in the SICoT dataset format.

    sicot synth --out data/synth                       # 100 classes, imbalance 100, 64 px
    sicot synth --out /tmp/m --classes 1000000 --metadata-only --max-per-class 1 \\
        --eval-per-class 0 --test-per-class 0           # a million-class table, no images
    sicot synth --out data/synth-new --new-skus 20       # + 20 new products in catalogue.jsonl

Classes are attribute tuples (brand, colour, material, pattern, category) picked from a space
of 1,228,800 (`vocabulary.py`). About a third of the classes are picked as "siblings" of an
earlier class that differ only in brand or material, so the data holds fine-grained pairs, and
tail classes share attributes (and so title words) with head classes. Class order is shuffled
with respect to attributes, then class i (0 = head) gets
    n_i = round(max_per_class * imbalance ** (-i / (N - 1)))    (at least 1)
training images: the exponential profile of CIFAR-LT / ImageNet-LT. Eval and test splits are
class balanced (`eval_per_class`, `test_per_class`), as in long-tailed benchmarks.

Titles and tags are noisy marketplace text: synonyms and non-English words for attributes,
dropped and wrong attribute words, keywords of other products, promo phrases, shuffled word
order, some empty titles and missing tags. The label is an opaque "sku-<hash of the attribute
tuple>" that never appears in text or pixels.

With `--new-skus N`, N more classes are "new products" held out of training: most are unseen
combinations of attribute values that training classes use, and a quarter (where the training
classes leave a value unused) carry one value no training class has, whose words the training
text never shows. They have no training or eval records; `catalogue.jsonl` describes each (one
noisy listing, `--new-sku-photos` photos in images/catalogue/, the format of
`sicot.data.catalogue`), their `test_per_class` test photos are in test.jsonl, their labels in
new_skus.json, and classes.jsonl lists them last with train_count 0 and "new_sku": true.

Every record is generated from its own random generator seeded by (seed, split, index), so
the output is byte-identical for the same arguments however the work is split over processes
(`--workers`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import pathlib
import random
import shutil
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sicot import console, contract
from sicot.data import vocabulary as vocab
from sicot.errors import UserError

FORMAT_VERSION = 1
SIBLING_FRACTION = 0.35
_OWNED_FILES = ("train.jsonl", "eval.jsonl", "test.jsonl", "classes.jsonl", "dataset.json",
                "catalogue.jsonl", "new_skus.json")
CATALOGUE_SEED_SLOT = len(contract.SPLITS)  # record_seed's split slot of the catalogue's records
NOVEL_VALUE_FRACTION = 0.25  # of the new SKUs: one attribute value no training class has



@dataclass(frozen=True)
class SynthConfig:
    classes: int = 100
    imbalance: float = 100.0
    max_per_class: int = 200
    eval_per_class: int = 5
    test_per_class: int = 10
    image_size: int = 64
    noise: float = 0.5
    seed: int = 0
    png_fraction: float = 0.1
    metadata_only: bool = False
    images_for: int = 0  # with metadata_only: render images for this many classes
    new_skus: int = 0  # extra classes held out of training, described in catalogue.jsonl
    new_sku_photos: int = 5  # catalogue photos per new SKU

    def validate(self) -> None:
        space = vocab.attribute_space_size()
        checks = [
            (1 <= self.classes <= space, f"--classes must be 1..{space}, got {self.classes}"),
            (self.imbalance >= 1, f"--imbalance must be >= 1, got {self.imbalance}"),
            (self.max_per_class >= 1, f"--max-per-class must be >= 1, got {self.max_per_class}"),
            (self.eval_per_class >= 0, f"--eval-per-class must be >= 0, got {self.eval_per_class}"),
            (self.test_per_class >= 0, f"--test-per-class must be >= 0, got {self.test_per_class}"),
            (16 <= self.image_size <= 1024, f"--image-size must be 16..1024, got {self.image_size}"),
            (0 <= self.noise <= 1, f"--noise must be in [0, 1], got {self.noise}"),
            (0 <= self.png_fraction <= 1, f"--png-fraction must be in [0, 1], got {self.png_fraction}"),
            (self.seed >= 0, f"--seed must be >= 0, got {self.seed}"),
            (0 <= self.images_for <= self.classes,
             f"--images-for must be 0..{self.classes} (the class count), got {self.images_for}"),
            (self.metadata_only or not self.images_for,
             "--images-for needs --metadata-only (without it every class gets images)"),
            (self.new_skus >= 0, f"--new-skus must be >= 0, got {self.new_skus}"),
            (self.new_skus + self.classes <= space,
             f"--classes + --new-skus must be at most {space}"),
            (self.new_sku_photos >= 0,
             f"--new-sku-photos must be >= 0, got {self.new_sku_photos}"),
            (not (self.metadata_only and self.new_skus),
             "--new-skus needs images (not --metadata-only)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


class SynthClass(NamedTuple):  # a tuple, not a dataclass: a million are made for --metadata-only
    rank: int                       # 0 = most training images
    label: str
    attributes: tuple[int, ...]     # indices into vocabulary.ATTRIBUTES, in that order
    train_count: int

    def attribute_names(self) -> dict[str, str]:
        return {name: values[i].name
                for (name, values), i in zip(vocab.ATTRIBUTES, self.attributes)}


def train_counts(num_classes: int, max_per_class: int, imbalance: float) -> list[int]:
    """n_i = round(n_max * R^(-i/(N-1))), rounded half up, at least 1."""
    if num_classes == 1:
        return [max_per_class]
    return [max(1, math.floor(max_per_class * imbalance ** (-i / (num_classes - 1)) + 0.5))
            for i in range(num_classes)]


_NAMES = tuple(tuple(v.name for v in values) for _, values in vocab.ATTRIBUTES)


def class_label(attributes) -> str:
    """An opaque class name: a hash of the attribute names, so no word of it is in any text."""
    names = "/".join(names[i] for names, i in zip(_NAMES, attributes))
    return "sku-" + hashlib.sha1(names.encode("utf-8")).hexdigest()[:12]


def class_name(attributes) -> str:
    """A readable name for people (e.g. 'red striped leather handbag Elko'), metadata only:
    classes.jsonl carries it beside the opaque label, training never sees it."""
    brand, colour, material, pattern, category = (
        names[i] for names, i in zip(_NAMES, attributes))
    words = [colour, pattern if pattern != "plain" else "", material, category, brand]
    return " ".join(w for w in words if w)


def choose_attribute_tuples(num_classes: int, seed: int) -> np.ndarray:
    """[num_classes, 5] distinct attribute tuples, in shuffled order. Picked in rounds of
    doubling size: in each round after the first, SIBLING_FRACTION of the candidates copy an
    earlier class and change only its brand or its material (fine-grained siblings)."""
    rng = np.random.default_rng([seed, 1009])
    sizes = vocab.ATTRIBUTE_SIZES
    brand_pos, material_pos = vocab.ATTRIBUTE_NAMES.index("brand"), vocab.ATTRIBUTE_NAMES.index("material")
    chosen = np.empty((0, len(sizes)), np.int64)
    while len(chosen) < num_classes:
        batch = max(16, len(chosen))
        candidates = np.stack([rng.integers(0, n, size=batch) for n in sizes], axis=1)
        if len(chosen):
            sibling = rng.random(batch) < SIBLING_FRACTION
            parents = chosen[rng.integers(0, len(chosen), size=batch)]
            pos = np.where(rng.random(batch) < 0.6, brand_pos, material_pos)
            new_value = rng.integers(0, 1 << 30, size=batch) % np.asarray(sizes)[pos]
            parents[np.arange(batch), pos] = new_value
            candidates[sibling] = parents[sibling]
        merged = np.concatenate([chosen, candidates])
        flat = np.ravel_multi_index(merged.T, sizes)
        _, first = np.unique(flat, return_index=True)
        chosen = merged[np.sort(first)][:num_classes]  # keep first occurrences, in order
    # head/tail order independent of attributes and of sibling order
    return chosen[rng.permutation(num_classes)]


def choose_classes(config: SynthConfig) -> list[SynthClass]:
    tuples = choose_attribute_tuples(config.classes, config.seed).tolist()
    counts = train_counts(config.classes, config.max_per_class, config.imbalance)
    return [SynthClass(rank, class_label(attrs), tuple(attrs), n)
            for rank, (attrs, n) in enumerate(zip(tuples, counts))]


def choose_new_skus(config: SynthConfig, classes: list[SynthClass]) -> list[SynthClass]:
    """`config.new_skus` classes not among `classes` (ranks after them, train_count 0): unseen
    combinations of attribute values the training classes use; NOVEL_VALUE_FRACTION of them
    (as far as the training classes leave values unused) with one value none of them has."""
    if not config.new_skus:
        return []
    rng = np.random.default_rng([config.seed, 2029])
    taken = {c.attributes for c in classes}
    used = [sorted({c.attributes[p] for c in classes}) for p in range(len(vocab.ATTRIBUTE_SIZES))]
    unused = [sorted(set(range(n)) - set(u)) for n, u in zip(vocab.ATTRIBUTE_SIZES, used)]
    novel_positions = [p for p, values in enumerate(unused) if values]
    n_novel = int(round(config.new_skus * NOVEL_VALUE_FRACTION)) if novel_positions else 0
    new = []
    for attempt in range(1000 * config.new_skus + 1000):
        if len(new) == config.new_skus:
            break
        attrs = [int(rng.choice(values)) for values in used]
        if len(new) < n_novel:
            p = novel_positions[len(new) % len(novel_positions)]
            attrs[p] = int(rng.choice(unused[p]))
        attrs = tuple(attrs)
        if attrs in taken:
            continue
        taken.add(attrs)
        new.append(SynthClass(len(classes) + len(new), class_label(attrs), attrs, 0))
    if len(new) < config.new_skus:
        raise UserError(f"--new-skus {config.new_skus}: only {len(new)} attribute tuples are "
                          f"left that training classes do not use")
    return new


def split_class_ranks(config: SynthConfig, classes: list[SynthClass], split: str) -> np.ndarray:
    """The class rank of every record of a split, in manifest order (shuffled)."""
    if split == "train":
        counts = np.array([c.train_count for c in classes], np.int64)
    else:
        per_class = config.eval_per_class if split == "eval" else config.test_per_class
        counts = np.full(len(classes), per_class, np.int64)
    ranks = np.repeat(np.arange(len(classes), dtype=np.int32), counts)
    order_rng = np.random.default_rng([config.seed, contract.SPLITS.index(split), 7919])
    return ranks[order_rng.permutation(len(ranks))]


def rendered_ranks(config: SynthConfig) -> set[int] | None:
    """Class ranks that get images (None = all), spread evenly from head to tail."""
    if not config.metadata_only:
        return None
    k, n = config.images_for, config.classes
    if k == 0:
        return set()
    if k == 1:
        return {0}
    return {math.floor(j * (n - 1) / (k - 1) + 0.5) for j in range(k)}


# ---------------------------------------------------------------------------------------------
# Text


# Per attribute position: the word lists of every value (plain tuples: this loop runs a million
# times for --metadata-only).
_WORDS = tuple(tuple(v.words for v in values) for _, values in vocab.ATTRIBUTES)
_STUFFING = (_WORDS[vocab.ATTRIBUTE_NAMES.index("colour")], _WORDS[vocab.ATTRIBUTE_NAMES.index("category")])
_FILLER, _PROMO = vocab.FILLER_WORDS, vocab.PROMO_WORDS


def make_text(attributes, noise: float, rng: random.Random) -> tuple[str, list[str]]:
    """A noisy marketplace title and tag list for a product with these attributes.
    (Written with `seq[int(r() * len(seq))]` rather than rng.choice: it runs a million times
    for --metadata-only and is several times faster.)"""
    r = rng.random
    p_drop, p_wrong = 0.7 * noise, 0.3 * noise
    words = []
    for all_words, true_index in zip(_WORDS, attributes):
        u = r()
        if u < p_drop:
            continue
        if u < p_drop + p_wrong:  # a wrong attribute word: seller error or keyword stuffing
            synonyms = all_words[int(r() * len(all_words))]
        else:
            synonyms = all_words[true_index]
        words.append(synonyms[int(r() * len(synonyms))])
    if r() < 0.6 * noise:  # keywords of other products
        for _ in range(1 + (r() < 0.5)):
            all_words = _STUFFING[r() < 0.5]
            synonyms = all_words[int(r() * len(all_words))]
            words.append(synonyms[int(r() * len(synonyms))])
    for _ in range(int(r() * 3)):
        words.append(_FILLER[int(r() * len(_FILLER))])
    if r() < 0.5 + 0.5 * noise:
        rng.shuffle(words)
    for _ in range((r() < noise) + (r() < noise)):  # promo phrases lead or trail
        promo = _PROMO[int(r() * len(_PROMO))]
        if r() < 0.5:
            words.insert(0, promo)
        else:
            words.append(promo)
    title = "" if r() < 0.06 * noise else " ".join(words)

    tags: list[str] = []
    if r() >= 0.3 * noise:
        for _ in range(1 + int(r() * 4)):
            u = r()
            if u < 0.25 * noise:
                tag = _PROMO[int(r() * len(_PROMO))]
            else:
                position = int(r() * len(_WORDS))
                all_words = _WORDS[position]
                if u >= 0.25 * noise + p_wrong:
                    synonyms = all_words[attributes[position]]
                else:
                    synonyms = all_words[int(r() * len(all_words))]
                tag = synonyms[int(r() * len(synonyms))]
            if tag not in tags:  # no repeated tag
                tags.append(tag)
    return title, tags


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class _Job:
    config: SynthConfig
    classes: list[SynthClass]
    rendered: set[int] | None
    out_dir: pathlib.Path
    split: str
    ranks: np.ndarray
    digits: int


def make_record(job: _Job, index: int, rank: int | None = None) -> dict:
    """The manifest record of one example; writes its image file when the class is rendered."""
    config = job.config
    cls = job.classes[int(job.ranks[index]) if rank is None else rank]
    rng = _RECORD_RNG
    rng.seed(record_seed(config.seed, job.split, index))
    title, tags = make_text(cls.attributes, config.noise, rng)
    image = None
    image_seed = rng.getrandbits(64)
    fmt = "png" if rng.random() < config.png_fraction else "jpeg"
    quality = 70 + int(rng.random() * 26)
    if job.rendered is None or cls.rank in job.rendered:
        from sicot.data import render
        img = render.render_product(cls.attributes, config.image_size, np.random.default_rng(image_seed))
        image = f"images/{job.split}/{index:0{job.digits}d}.{'png' if fmt == 'png' else 'jpg'}"
        (job.out_dir / image).write_bytes(render.encode(img, fmt, quality))
    return {"image": image, "title": title, "tags": tags, "label": cls.label}


def record_seed(seed: int, split: str, index: int) -> int:
    """The seed of one record's generator: distinct for every (seed, split, index); the
    catalogue's records use the slot after the splits."""
    slot = CATALOGUE_SEED_SLOT if split == "catalogue" else contract.SPLITS.index(split)
    return (seed << 40) | (slot << 36) | index


def write_catalogue(config: SynthConfig, new: list[SynthClass], out_dir: pathlib.Path) -> int:
    """catalogue.jsonl (one noisy listing and `new_sku_photos` photos per new SKU) and
    new_skus.json; returns the number of photos written."""
    from sicot.data import render
    from sicot.data.catalogue import write_catalogue as write_lines

    folder = out_dir / "images" / "catalogue"
    folder.mkdir(parents=True, exist_ok=True)
    lines, photos = [], 0
    for j, cls in enumerate(new):
        rng = random.Random(record_seed(config.seed, "catalogue", j))
        title, tags = make_text(cls.attributes, config.noise, rng)
        images = []
        for k in range(config.new_sku_photos):
            image_rng = np.random.default_rng(rng.getrandbits(64))
            img = render.render_product(cls.attributes, config.image_size, image_rng)
            path = f"images/catalogue/{j:05d}_{k}.jpg"
            (out_dir / path).write_bytes(render.encode(img, "jpeg", 70 + int(rng.random() * 26)))
            images.append(path)
            photos += 1
        lines.append({"label": cls.label, "title": title, "tags": tags, "images": images})
    write_lines(out_dir / "catalogue.jsonl", lines)
    (out_dir / "new_skus.json").write_text(json.dumps([c.label for c in new]) + "\n",
                                           encoding="utf-8")
    return photos


_WORKER_JOB: _Job | None = None


_RECORD_RNG = random.Random()  # reseeded for every record (cheaper than a new generator)
_quote = json.encoder.encode_basestring  # the C string encoder behind json.dumps(ensure_ascii=False)


def record_line(record: dict) -> str:
    """json.dumps(record, ensure_ascii=False) for a manifest record, several times faster."""
    image = "null" if record["image"] is None else _quote(record["image"])
    tags = ", ".join(map(_quote, record["tags"]))
    return (f'{{"image": {image}, "title": {_quote(record["title"])}, "tags": [{tags}], '
            f'"label": {_quote(record["label"])}}}')


def _chunk_lines(bounds: tuple[int, int]) -> list[str]:
    lo, hi = bounds
    job = _WORKER_JOB
    return [record_line(make_record(job, i, rank))
            for i, rank in zip(range(lo, hi), job.ranks[lo:hi].tolist())]


def _prepare_out_dir(out_dir: pathlib.Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} exists and is not a folder")
    # The command's log folder alone (written before this runs) leaves a new folder new.
    if out_dir.is_dir() and any(p.name != console.LOG_FOLDER for p in out_dir.iterdir()):
        try:
            ours = json.loads((out_dir / "dataset.json").read_text())["generator"] == "sicot synth"
        except (OSError, ValueError, KeyError, TypeError):
            ours = False
        if not ours:
            raise UserError(f"--out {out_dir} is not empty and holds no sicot synth data set "
                              "(dataset.json); choose an empty or new folder")
        for name in _OWNED_FILES:  # regenerate a previous synth data set in place
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "images", ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class SynthSummary:
    out_dir: pathlib.Path
    records: dict[str, int]
    images: int
    bands: dict[str, int]
    seconds: float


def generate(config: SynthConfig, out_dir, workers: int = 1, progress: bool = True,
             log=print) -> SynthSummary:
    """Write the data set to `out_dir`: <split>.jsonl, images/<split>/, classes.jsonl,
    dataset.json. Deterministic for the config, whatever `workers` is."""

    global _WORKER_JOB
    config.validate()
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    start = time.monotonic()
    out_dir = pathlib.Path(out_dir)
    _prepare_out_dir(out_dir)
    classes = choose_classes(config)
    new = choose_new_skus(config, classes)
    rendered = rendered_ranks(config)
    # New SKUs have test photos only (train_count 0, no eval records).
    plans = {split: split_class_ranks(config, classes + new if split == contract.TEST_SPLIT
                                      else classes, split)
             for split in contract.SPLITS}
    total = sum(len(r) for r in plans.values())

    with open(out_dir / "classes.jsonl", "w", encoding="utf-8") as f:
        # Formatted by hand for speed at a million classes; every name is plain ASCII without
        # quotes or backslashes (tests parse the file with json).
        keys = vocab.ATTRIBUTE_NAMES
        for c in classes + new:
            attrs = ", ".join(f'"{k}": "{names[i]}"' for k, names, i in zip(keys, _NAMES, c.attributes))
            extra = ', "new_sku": true' if c.rank >= len(classes) else ""
            f.write(f'{{"label": "{c.label}", "name": "{class_name(c.attributes)}", '
                    f'"rank": {c.rank}, "train_count": {c.train_count}, '
                    f'"attributes": {{{attrs}}}{extra}}}\n')

    images = 0
    bar = console.progress(total=total, unit="rec", desc="sicot synth", disable=not progress, mininterval=1)
    pool = None
    try:
        for split in contract.SPLITS:
            ranks = plans[split]
            job = _Job(config, classes + new, rendered, out_dir, split, ranks,
                       max(6, len(str(max(len(ranks) - 1, 0)))))
            if rendered is None or rendered:
                (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
            _WORKER_JOB = job
            chunk = 256 if not config.metadata_only else 4096
            bounds = [(s, min(s + chunk, len(ranks))) for s in range(0, len(ranks), chunk)]
            if workers > 1 and len(bounds) > 1:
                # Fork after setting the job so workers inherit it instead of unpickling classes.
                pool = multiprocessing.get_context("fork").Pool(workers)
                chunks = pool.imap(_chunk_lines, bounds)
            else:
                chunks = map(_chunk_lines, bounds)
            with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for (lo, hi), lines in zip(bounds, chunks):
                    f.write("".join(line + "\n" for line in lines))
                    bar.update(hi - lo)
            if pool is not None:
                pool.close()
                pool.join()
                pool = None
            if rendered is None:
                images += len(ranks)
            else:
                images += int(np.isin(ranks, list(rendered)).sum()) if rendered else 0
    finally:
        bar.close()
        _WORKER_JOB = None
        if pool is not None:
            pool.terminate()

    if new:
        images += write_catalogue(config, new, out_dir)
    records = {split: int(len(plans[split])) for split in contract.SPLITS}
    counts = [c.train_count for c in classes]
    # The printed summary uses the default band edges; the trainer's are its Transform's.
    bands = {band: 0 for band in contract.BANDS}
    for n in counts:
        bands[contract.band_of_count(n)] += 1
    meta = {
        "generator": "sicot synth",
        "format_version": FORMAT_VERSION,
        "settings": dataclasses.asdict(config),
        "num_classes": config.classes,
        "records": records,
        "images": images,
        "new_skus": len(new),
        "attribute_space": dict(zip(vocab.ATTRIBUTE_NAMES, vocab.ATTRIBUTE_SIZES)),
    }
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    seconds = time.monotonic() - start
    low, high = contract.DEFAULT_BAND_EDGES
    log(f"sicot synth: {config.classes} classes, records train={records['train']} "
        f"eval={records['eval']} test={records['test']}, {images} images, "
        f"bands (training images per class) many>{high}: {bands[contract.MANY]}, "
        f"medium {low}-{high}: {bands[contract.MEDIUM]}, "
        f"few<{low}: {bands[contract.FEW]}"
        + (f", {len(new)} new SKUs in catalogue.jsonl" if new else "")
        + f"; {seconds:.1f}s -> {out_dir}")
    return SynthSummary(out_dir, records, images, bands, seconds)
