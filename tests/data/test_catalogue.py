"""The catalogue format: parsing, the importer's rules per photo, quarantine with reasons;
`sicot synth --new-skus` writes a catalogue in that format."""
import io
import json

import pytest
from PIL import Image

from sicot.errors import UserError
from sicot.data import synth
from sicot.data.catalogue import read_catalogue


def _png(colour=(200, 30, 30), size=(10, 8)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(_png())
    (tmp_path / "images" / "b.png").write_bytes(_png((0, 0, 200)))
    (tmp_path / "images" / "c.png").write_bytes(_png((0, 200, 0)))
    (tmp_path / "images" / "text.png").write_bytes(b"not an image at all")
    (tmp_path / "outside.png").write_bytes(_png())
    return tmp_path


def _write(folder, lines):
    path = folder / "catalogue.jsonl"
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l, ensure_ascii=False))
                            + "\n" for l in lines), encoding="utf-8")
    return path


def test_good_lines_become_skus_with_normalised_text_and_photo_bytes(folder):
    path = _write(folder, [
        {"label": " red\u200bmug ", "title": "Red  mug\tsale", "tags": ["cup", "", "gift|red"],
         "images": ["images/a.png", "images/b.png"]},
        {"label": "lamp", "title": "desk lamp"},  # no photos: listing only
        {"label": "sock", "images": []},
        "",
    ])
    catalogue = read_catalogue(path)
    assert catalogue.quarantine == [] and catalogue.lines == 3
    mug, lamp, sock = catalogue.skus
    assert (mug.label, mug.title, mug.tags) == ("redmug", "Red mug sale", "cup|gift|red")
    assert mug.images == ((folder / "images/a.png").read_bytes(),
                          (folder / "images/b.png").read_bytes())
    assert mug.item_ids == ("redmug/images/a.png", "redmug/images/b.png")
    assert mug.source == "catalogue.jsonl:1"
    assert (lamp.images, lamp.title, lamp.tags) == ((), "desk lamp", "")
    assert sock.images == ()
    assert catalogue.summary()["skus_without_photos"] == 2


def test_bad_lines_and_bad_photos_are_quarantined_with_a_reason_nothing_lost(folder):
    path = _write(folder, [
        "{not json",
        {"title": "no label"},
        {"label": "   "},
        {"label": "x", "images": "images/a.png"},
        {"label": "x", "tags": 7},
        {"label": "mug", "images": ["images/a.png", "images/missing.png", "images/text.png",
                                    "../outside.png", ""]},
        {"label": "mug", "images": ["images/b.png"]},
        ["a", "list"],
    ])
    catalogue = read_catalogue(path)
    reasons = [(q["source"], q["reason"].split(":")[0], q.get("image"))
               for q in catalogue.quarantine]
    assert reasons == [
        ("catalogue.jsonl:1", "bad_json", None),
        ("catalogue.jsonl:2", "missing_field", None),
        ("catalogue.jsonl:3", "empty_label", None),
        ("catalogue.jsonl:4", "bad_field", None),
        ("catalogue.jsonl:5", "bad_field", None),
        ("catalogue.jsonl:6", "missing_image", "images/missing.png"),
        ("catalogue.jsonl:6", "not_image", "images/text.png"),
        ("catalogue.jsonl:6", "path_outside", "../outside.png"),
        ("catalogue.jsonl:6", "missing_field", ""),
        ("catalogue.jsonl:7", "duplicate_label", None),
        ("catalogue.jsonl:8", "bad_json", None),
    ]
    assert "catalogue.jsonl:6" in catalogue.quarantine[-2]["reason"]  # names the kept line
    (mug,) = catalogue.skus  # the good photo of line 6 is kept
    assert mug.image_paths == ("images/a.png",)
    # every line is a SKU or a line-level quarantine entry
    line_level = {q["source"] for q in catalogue.quarantine if "image" not in q}
    assert len(line_level) + len(catalogue.skus) == catalogue.lines == 8
    out = catalogue.write_quarantine(folder / "q" / "quarantine.jsonl")
    assert [json.loads(l) for l in out.read_text().splitlines()] == catalogue.quarantine


def test_max_images_keeps_the_first_good_photos_and_counts_the_rest(folder):
    path = _write(folder, [{"label": "mug", "images": ["images/missing.png", "images/a.png",
                                                       "images/b.png", "images/c.png"]}])
    catalogue = read_catalogue(path, max_images=2)
    (mug,) = catalogue.skus
    assert mug.image_paths == ("images/a.png", "images/b.png") and mug.unused_images == 1
    assert read_catalogue(path, max_images=0).skus[0].images == ()


def test_missing_catalogue_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_catalogue(tmp_path / "nope.jsonl")


def test_synth_new_skus_are_held_out_and_described_in_a_catalogue(tmp_path):
    config = synth.SynthConfig(classes=12, imbalance=5, max_per_class=6, eval_per_class=1,
                               test_per_class=2, image_size=24, seed=4, new_skus=4,
                               new_sku_photos=3)
    out = tmp_path / "synth"
    synth.generate(config, out, progress=False, log=lambda *_: None)
    new = json.loads((out / "new_skus.json").read_text())
    assert len(new) == 4

    def labels(split):
        return [json.loads(l)["label"] for l in (out / f"{split}.jsonl").read_text().splitlines()]

    assert not set(new) & set(labels("train")) and not set(new) & set(labels("eval"))
    test = labels("test")
    assert all(test.count(label) == 2 for label in new) and len(test) == 2 * 16
    catalogue = read_catalogue(out / "catalogue.jsonl")
    assert catalogue.quarantine == [] and [s.label for s in catalogue.skus] == new
    assert all(len(s.images) == 3 for s in catalogue.skus)
    classes = [json.loads(l) for l in (out / "classes.jsonl").read_text().splitlines()]
    trained, held_out = classes[:12], classes[12:]
    assert [c["label"] for c in held_out] == new
    assert all(c["new_sku"] and c["train_count"] == 0 for c in held_out)
    # unseen combinations of values that training classes use, plus (here 1 of 4) a value
    # no training class has
    tuples = {tuple(c["attributes"].values()) for c in trained}
    used = [{c["attributes"][k] for c in trained} for k in trained[0]["attributes"]]
    novel = [c for c in held_out
             if any(v not in u for v, u in zip(c["attributes"].values(), used))]
    assert len(novel) == 1
    assert all(tuple(c["attributes"].values()) not in tuples for c in held_out)


def test_synth_without_new_skus_writes_no_catalogue(tmp_path):
    config = synth.SynthConfig(classes=4, max_per_class=3, imbalance=2, eval_per_class=1,
                               test_per_class=1, image_size=16)
    synth.generate(config, tmp_path / "s", progress=False, log=lambda *_: None)
    assert not (tmp_path / "s" / "catalogue.jsonl").exists()
    assert json.loads((tmp_path / "s" / "dataset.json").read_text())["new_skus"] == 0
