"""`sicot enroll` on real (tiny) trained models: what changes, what does not, and the search
signatures of the enrolled SavedModel against the eager model."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops of the TFT graph)

from sicot.cli import main
from sicot.errors import UserError
from sicot.trainer.enrollment import catalogue as enroll, prototypes


def _load_keras(folder):
    import keras

    from sicot.trainer.model import enrolled_sicot_model, sicot_model  # noqa: F401

    return keras.saving.load_model(os.path.join(folder, "run", "model.keras"))


def _saved(folder):
    from sicot.trainer.evaluation.band_accuracy import resolve_saved_model_dir

    return tf.saved_model.load(resolve_saved_model_dir(folder))


def test_empty_catalogue_changes_nothing_for_trained_classes(trained, tmp_path, enroll_queries):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    report = enroll.enroll_folder(trained["sicot"], str(empty), str(tmp_path / "out"),
                                  log=lambda *_: None)
    assert report["new_classes"] == 0 and report["items"] == 0
    base, same = _saved(trained["sicot"]), _saved(str(tmp_path / "out"))
    assert not any(s.startswith("search") for s in same.signatures)  # nothing to search
    images = tf.constant(enroll_queries)
    title = tf.constant(["word1 sale"] * len(images))
    tags = tf.constant(["gift"] * len(images))
    for name, args in (("serving_default", {"image": images}),
                       ("serving_image_text", {"image": images, "title": title, "tags": tags})):
        a, b = base.signatures[name](**args), same.signatures[name](**args)
        for key in ("class_ids", "classes"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
        for key in ("scores", "embedding"):
            np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-6, atol=1e-7)


def test_trained_logits_are_kept_or_put_on_the_same_footing_and_enrolled_appended(
        trained, enrolled, enroll_queries):
    import tensorflow_transform as tft

    from sicot.trainer.enrollment.enrolled_model import transform_raw

    base, new = _load_keras(trained["sicot"]), _load_keras(enrolled["out"])
    assert new.num_classes == base.num_classes + 2  # teal_new, grey_listing
    names = json.load(open(os.path.join(enrolled["out"], "run", "class_names.json")))
    assert names[-2:] == ["teal_new", "grey_listing"] and names.count("class2") == 1
    tto = tft.TFTransformOutput(json.load(open(os.path.join(
        trained["sicot"], "train_report.json")))["transform_output"])
    pixels, tokens = transform_raw(tto, enroll_queries, ["word1 sale"] * 8)
    inputs = {"image": pixels, "tokens": tokens}
    a, b = base(inputs, training=False), new(inputs, training=False)
    calibration = prototypes.load_calibration(os.path.join(enrolled["out"], "run",
                                                           prototypes.CALIBRATION_FILE))
    features = {"visual": np.asarray(a["embedding"]), "semantic": np.asarray(a["semantic"])}
    features["fused"] = np.concatenate([features["visual"], features["semantic"]], axis=1)
    same_footing = enrolled["report"]["same_footing"]  # what this enrolment used (auto)
    check = enrolled["report"]["check"]["heads"]
    assert same_footing == {h: check[h]["chosen"] == "same-footing" for h in check}
    assert list(new.same_footing) == [h for h in ("visual", "semantic", "fused")
                                      if same_footing[h]]
    for head in ("visual", "semantic", "fused"):
        key = f"{head}_logits"
        assert b[key].shape[1] == a[key].shape[1] + 2
        h = calibration.heads[head]
        if same_footing[head]:  # the trained classes by their class means, at the same scale
            expected = h.scale * prototypes.unit(features[head]) @ h.class_means.T
            np.testing.assert_allclose(b[key][:, :base.num_classes], expected, rtol=1e-4,
                                       atol=1e-4)
        else:
            np.testing.assert_array_equal(b[key][:, :base.num_classes], a[key])
    for a_weight, b_weight in zip(base.get_weights(), new.base.get_weights()):
        np.testing.assert_array_equal(a_weight, b_weight)


def test_report_and_quarantine(enrolled):
    report = enrolled["report"]
    assert (report["new_classes"], report["updated_classes"], report["trained_labels"]) == (
        2, 0, 1)
    entries = {e["label"]: e for e in report["entries"]}
    assert entries["teal_new"]["photos"] == 2 and entries["grey_listing"]["photos"] == 0
    assert entries["grey_listing"]["text_used"] and entries["class2"]["class"].startswith(
        "trained")
    assert set(report["offsets"]) == {"visual", "semantic", "fused"}
    quarantine = [json.loads(l) for l in open(
        os.path.join(enrolled["out"], "catalogue_quarantine.jsonl"))]
    assert sorted(q["reason"].split(":")[0] for q in quarantine) == [
        "bad_json", "missing_image", "no_evidence"]
    assert report["items"] == 2 + 1 + 1  # teal photos, the listing item, the class2 photo
    # the enrolment check: leave-one-out over teal_new's 2 photos (the one SKU with 2+)
    check = report["check"]
    assert check["leave_one_out"] == {"photos": 2, "skus": 1, "capped": False,
                                      "skus_with_2_photos": 1}
    assert set(check["heads"]) == {"visual", "semantic", "fused"}
    for head in check["heads"].values():
        assert head["chosen"] in prototypes.RULES and head["reason"]
        for figures in head["rules"].values():
            assert figures["enrolled"]["photos"] == 2 and figures["own_photos"] is None
            assert figures["trained"]["photos"] > 0
            assert 0.0 <= figures["enrolled"]["named"] <= 1.0
    # grey_listing has no photo: the calibration's listing-alone simulation stands in for it
    assert check["listing_alone"] == {"skus": 1}
    for head in check["heads"].values():
        assert set(head["listing_alone"]) == set(prototypes.RULES)
        for figures in head["listing_alone"].values():
            assert figures["classes"] >= 1 and figures["photos"] > 0
            assert 0.0 <= figures["named"] <= 1.0
    listing_warnings = [w for w in report["warnings"] if "listing alone" in w]
    assert len(listing_warnings) == sum(
        head["listing_alone"][head["chosen"]]["named"] < 0.01
        for name, head in check["heads"].items() if name in ("visual", "fused"))
    saved = json.load(open(os.path.join(enrolled["out"], "run", "enrolment.json")))
    assert saved["check"] == json.loads(json.dumps(check))
    assert saved["warnings"] == report["warnings"]


def test_enrolled_signatures_agree_with_the_eager_model(enrolled, enroll_queries):
    import tensorflow_transform as tft

    from sicot.data.search_index import SearchItems, item_vectors
    from sicot.trainer.enrollment.enrolled_model import transform_raw

    model = _load_keras(enrolled["out"])
    loaded = _saved(enrolled["out"])
    report = json.load(open(os.path.join(enrolled["out"], "train_report.json")))
    tto = tft.TFTransformOutput(report["transform_output"])
    names = json.load(open(os.path.join(enrolled["out"], "run", "class_names.json")))
    items = SearchItems.load(os.path.join(enrolled["out"], "run", "search_items.npz"))
    images = tf.constant(enroll_queries)
    n = len(images)
    titles, tags = ["word1 teal"] * (n // 2) + [""] * (n - n // 2), ["gift"] * n
    pixels, tokens = transform_raw(tto, list(images.numpy()), titles, tags)
    image_only = model({"image": pixels}, training=False)
    with_text = model({"image": pixels, "tokens": tokens}, training=False)
    text_args = {"title": tf.constant(titles), "tags": tf.constant(tags)}
    for signature, logits, args in (
            ("serving_default", image_only["visual_logits"], {}),
            ("serving_image_text", with_text["fused_logits"], text_args)):
        served = loaded.signatures[signature](image=images, **args)
        probs = tf.nn.softmax(logits).numpy()
        ids = np.argsort(-probs, axis=1)[:, :5]
        np.testing.assert_array_equal(served["class_ids"].numpy(), ids)
        np.testing.assert_allclose(served["scores"].numpy(), np.take_along_axis(probs, ids, 1),
                                   rtol=1e-4, atol=1e-6)
        assert [[c.decode() for c in row] for row in served["classes"].numpy()] == [
            [names[i] for i in row] for row in ids]
    # exact search = numpy cosine top-k over the saved items, by the items' own vector rule
    image_q, text_q = item_vectors(image_only["embedding"].numpy(), with_text["semantic"].numpy())
    for signature, query, matrix, args in (
            ("search_image", image_q, items.image, {}),
            ("search_image_text", text_q, items.image_text, text_args)):
        scores = query @ matrix.T
        order = np.argsort(-scores, axis=1)[:, :min(10, len(items))]
        found = loaded.signatures[signature](image=images, **args)
        np.testing.assert_allclose(found["scores"].numpy(),
                                   np.take_along_axis(scores, order, 1), rtol=1e-4, atol=1e-5)
        assert [[i.decode() for i in row] for row in found["item_ids"].numpy()] == [
            [items.item_ids[j] for j in row] for row in order]
        assert [[i.decode() for i in row] for row in found["labels"].numpy()] == [
            [items.labels[j] for j in row] for row in order]


def test_search_returns_the_item_itself_first_for_a_catalogue_photo(enrolled, catalogue):
    loaded = _saved(enrolled["out"])
    folder = os.path.dirname(catalogue)
    paths = ["photos/teal_new0.png", "photos/teal_new1.png", "photos/class2.png"]
    labels = ["teal_new", "teal_new", "class2"]
    images = tf.constant([open(os.path.join(folder, p), "rb").read() for p in paths])
    listings = {"title": tf.constant(["word1 teal", "word1 teal", "word2"]),  # their own
                "tags": tf.constant(["gift", "gift", ""])}
    for signature, extra in (("search_image", {}), ("search_image_text", listings)):
        found = loaded.signatures[signature](image=images, **extra)
        first = [i.decode() for i in found["item_ids"].numpy()[:, 0]]
        assert first == [f"{l}/{p}" for l, p in zip(labels, paths)], signature
        np.testing.assert_allclose(found["scores"].numpy()[:, 0], 1.0, atol=1e-5)


def test_visual_only_model_refuses_a_sku_without_photos(trained, catalogue, tmp_path):
    with pytest.raises(UserError, match=r"no text branch.*catalogue.jsonl:2 \('grey_listing'\)"):
        enroll.enroll_folder(trained["cosine"], str(catalogue), str(tmp_path / "o"),
                             log=lambda *_: None)
    with pytest.raises(UserError, match="--no-text"):
        enroll.enroll_folder(trained["sicot"], str(catalogue), str(tmp_path / "o"),
                             use_text=False, log=lambda *_: None)
    photos_only = tmp_path / "photos.jsonl"
    folder = os.path.dirname(catalogue)
    photos_only.write_text(json.dumps({"label": "teal_new", "images": [
        os.path.join(folder, "photos", "teal_new0.png")]}) + "\n")
    # an absolute path outside the catalogue's folder breaks the path rule: the photo is
    # quarantined, and the SKU, left without photos, is refused
    with pytest.raises(UserError, match=r"photos.jsonl:1 \('teal_new', its 1 photo\(s\) "
                                        r"quarantined\)"):
        enroll.enroll_folder(trained["cosine"], str(photos_only), str(tmp_path / "c"),
                             log=lambda *_: None)
    report = enroll.enroll_folder(trained["cosine"], str(catalogue_without_listing_only(
        catalogue, tmp_path)), str(tmp_path / "c"), log=lambda *_: None)
    assert (report["new_classes"], report["trained_labels"]) == (1, 1)
    assert report["calibration"]["text_weight"] == 0.0


def catalogue_without_listing_only(catalogue, tmp_path):
    """The test catalogue without its photo-less lines, in the same folder."""
    lines = [l for l in open(catalogue).read().splitlines()
             if l.startswith("{\"") and "images" in l]
    path = os.path.join(os.path.dirname(catalogue), "with_photos.jsonl")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_enrolling_onto_an_enrolled_model_updates_enrolled_classes(enrolled, catalogue, tmp_path):
    again = tmp_path / "again.jsonl"
    again.write_text(json.dumps({"label": "teal_new", "title": "word1",
                                 "images": [os.path.join("photos", "teal_new1.png")]}) + "\n")
    os.link(again, os.path.join(os.path.dirname(catalogue), "again.jsonl"))
    out = str(tmp_path / "second")
    report = enroll.enroll_folder(enrolled["out"], os.path.join(os.path.dirname(catalogue),
                                                                "again.jsonl"), out,
                                  log=lambda *_: None)
    assert (report["new_classes"], report["updated_classes"]) == (0, 1)
    names = json.load(open(os.path.join(out, "run", "class_names.json")))
    assert names == json.load(open(os.path.join(enrolled["out"], "run", "class_names.json")))
    items = json.load(open(os.path.join(out, "run", "enrolment.json")))
    assert items["items"] == enrolled["report"]["items"] - 1  # teal: 2 photos -> 1
    assert "teal_new" in items["enrolled_labels"] and "grey_listing" in items["enrolled_labels"]


def test_enrolled_skus_that_would_never_be_named_are_warned_about(trained, catalogue, tmp_path,
                                                                 capsys):
    """Two SKUs listing the same two photos: whichever is held out, the other SKU's prototype
    (built from both photos) is nearer than its own (built from the other photo alone), so
    neither is ever named, under either rule: `sicot enroll` says so and records it."""
    folder = os.path.dirname(catalogue)
    photos = [os.path.join("photos", f"teal_new{i}.png") for i in range(2)]
    twins = os.path.join(folder, "twins.jsonl")
    with open(twins, "w") as f:
        for label in ("teal_a", "teal_b"):
            f.write(json.dumps({"label": label, "images": photos}) + "\n")
    out = str(tmp_path / "twins")
    logged = []
    report = enroll.enroll_folder(trained["cosine"], twins, out, log=logged.append)
    check = report["check"]
    assert check["leave_one_out"]["photos"] == 4 and check["leave_one_out"]["skus"] == 2
    visual = check["heads"]["visual"]
    assert all(f["enrolled"]["named"] == 0.0 for f in visual["rules"].values())
    err = capsys.readouterr().err
    assert err.count("WARNING: sicot enroll: enrolled SKUs would almost never be answered: "
                     "image-only queries (visual head") == 1
    assert ("name them for 0.0% of their held-out catalogue photos (leave-one-out) (4 photos "
            "of 2 SKUs") in err
    saved = json.load(open(os.path.join(out, "run", "enrolment.json")))
    assert saved["warnings"] == report["warnings"] and len(saved["warnings"]) == 1
    assert saved["warnings"][0] in err
    assert "they lose to other enrolled SKUs: look for duplicate or look-alike SKUs" in err
    assert saved["check"]["heads"]["visual"]["chosen"] == visual["chosen"]
    train_report = json.load(open(os.path.join(out, "train_report.json")))
    assert train_report["enrolment"]["warnings"] == saved["warnings"]
    printed = "\n".join(logged)
    assert "enrolment check (allowed trained top-1 drop 1.0 points)" in printed
    assert "enrolled named 0.0% of 4 photos of 2 SKUs (leave-one-out)" in printed


def test_enroll_command_line_errors(capsys, tmp_path):
    code = main(["enroll", "--model", str(tmp_path), "--catalog", str(tmp_path / "c.jsonl"),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "run/model.keras" in capsys.readouterr().err


def test_pipeline_enrolment_is_sicot_enroll_on_trainer_artifacts(trained, catalogue, enrolled,
                                                                 enroll_queries, tmp_path):
    """`enroll_for_pipeline` (the Enroller's body) on Trainer-like artifacts on a remote
    file system (ram://): the same model as `sicot enroll`, laid out like the Trainer's."""
    base = f"ram://enroller_{tmp_path.name}"
    source = trained["sicot"]
    enroll._copy_tree(os.path.join(source, "export", "1"), f"{base}/trainer/Format-Serving")
    enroll._copy_tree(os.path.join(source, "export", "warm_start"), f"{base}/trainer/warm_start")
    enroll._copy_tree(os.path.join(source, "run"), f"{base}/trainer_run")
    enroll._copy_tree(os.path.dirname(catalogue), f"{base}/catalogue")
    report = json.load(open(os.path.join(source, "train_report.json")))
    out = {k: f"{base}/enroller/{k}" for k in ("model", "model_run", "quarantine")}
    result = enroll.enroll_for_pipeline(
        trained_model=f"{base}/trainer", trained_model_run=f"{base}/trainer_run",
        transform_graph=report["transform_output"], transformed_examples=f"{base}/unused",
        catalogue_path=f"{base}/catalogue/catalogue.jsonl", settings={},
        log=lambda *_: None, **out)
    assert (result["new_classes"], result["num_classes"]) == (2, enrolled["report"]["num_classes"])
    gfile = tf.io.gfile
    assert gfile.exists(f"{out['model']}/Format-Serving/saved_model.pb")
    assert gfile.exists(f"{out['model']}/warm_start/model.keras")  # for a later --warm-start
    names = json.load(open(os.path.join(enrolled["out"], "run", "class_names.json")))
    assert json.loads(gfile.GFile(f"{out['model_run']}/class_names.json").read()) == names
    # the export names every class, for the ErrorReport's confusion pairs and `evaluate`
    from sicot.trainer.evaluation.error_analysis import class_names_of

    assert class_names_of(f"{out['model']}/Format-Serving") == names
    quarantine = [json.loads(l) for l in gfile.GFile(
        f"{out['quarantine']}/catalogue_quarantine.jsonl").read().splitlines()]
    assert sorted((q["source"], q["reason"].split(":")[0]) for q in quarantine) == [
        ("catalogue.jsonl:1", "missing_image"), ("catalogue.jsonl:4", "bad_json"),
        ("catalogue.jsonl:5", "no_evidence")]
    # the served answers are those of the `sicot enroll` SavedModel
    pipeline_model = tf.saved_model.load(f"{out['model']}/Format-Serving")
    images = tf.constant(enroll_queries)
    a = pipeline_model.signatures["serving_default"](image=images)
    b = _saved(enrolled["out"]).signatures["serving_default"](image=images)
    np.testing.assert_array_equal(a["classes"].numpy(), b["classes"].numpy())
    np.testing.assert_allclose(a["scores"].numpy(), b["scores"].numpy(), rtol=1e-5, atol=1e-6)


def test_enroll_settings_name_the_bad_value():
    assert enroll.enroll_settings() == {"max_images_per_sku": None, "use_text": True,
                                        "trained_budget": 0.01, "scoring": "auto",
                                        "max_trained_drop": 0.01}
    with pytest.raises(UserError, match="--max-trained-drop 1.5"):
        enroll.enroll_settings(max_trained_drop=1.5)
    with pytest.raises(UserError, match="--scoring sometimes"):
        enroll.enroll_settings(scoring="sometimes")
    with pytest.raises(UserError, match="--trained-budget 1.0"):
        enroll.enroll_settings(trained_budget=1.0)
    with pytest.raises(UserError, match="--max-images-per-sku -1"):
        enroll.enroll_settings(max_images_per_sku=-1)
    with pytest.raises(TypeError):
        enroll.enroll_settings(max_images=3)  # the Enroller's JSON settings: known keys only


def test_a_model_with_a_learned_listing_projection_enrols_listings_through_it(
        trained, trained_listing, catalogue, tmp_path):
    """`listing_weight` > 0: the calibration `sicot train` saves maps R s0, and a listing-only
    SKU's visual prototype is that map of R s0 (not of s0)."""
    import keras
    import tensorflow_transform as tft

    from sicot.data.catalogue import read_catalogue
    from sicot.trainer.enrollment import enrolled_model

    folder = trained_listing
    calibration = prototypes.load_calibration(
        os.path.join(folder, "run", prototypes.CALIBRATION_FILE))
    assert calibration.text_input == "listing_visual"
    out = str(tmp_path / "enrolled")
    report = enroll.enroll_folder(folder, str(catalogue), out, log=lambda *_: None)
    assert report["calibration"]["text_input"] == "listing_visual"
    model = _load_keras(out)
    base = enrolled_model.base_model(model)
    assert base.has_listing_projection
    sku = [s for s in read_catalogue(str(catalogue)).skus if s.label == "grey_listing"][0]
    tto = tft.TFTransformOutput(trained["transform"].transform_output_dir)
    _, tokens = enrolled_model.transform_raw(tto, [enroll.placeholder_image()], [sku.title],
                                             [sku.tags])
    s0 = enrolled_model.embed_listings(base, tokens)
    expected = prototypes.unit(calibration.text_map(enrolled_model.listing_to_visual(base, s0)))
    slot = report["enrolled_labels"].index("grey_listing")
    got = np.asarray(model.enrolled_head("visual").prototypes.numpy())[slot]
    np.testing.assert_allclose(got, expected[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(expected, prototypes.unit(calibration.text_map(s0)), atol=1e-3)
    assert isinstance(keras.saving.load_model(os.path.join(folder, "run", "model.keras")),
                      type(base))
