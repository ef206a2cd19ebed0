"""The enrolment check (numpy) on worlds with known answers: what each scoring rule would cost
the trained classes and give the enrolled SKUs, the rule `auto` picks on that trade-off, and
the warning when enrolled SKUs would almost never be answered."""
import numpy as np

from sicot.trainer.enrollment import enrolment_check as C
from sicot.trainer.enrollment import prototypes as E

TRAINED, DIM = 50, 8


def _world(seed=3, per_class=40):
    """50 trained class directions on a sphere, a linear head with rows at them; a photo is its
    class direction times a random length (0.5-2) plus noise (as a linear head's inputs)."""
    rng = np.random.default_rng(seed)
    mu = E.unit(rng.normal(size=(TRAINED + 10, DIM)))

    def photos(labels):
        length = rng.uniform(0.5, 2.0, size=(len(labels), 1))
        return length * (mu[labels] + rng.normal(size=(len(labels), DIM)) * 0.15)

    head = E.HeadRows("linear", 6.0 * mu[:TRAINED], np.zeros(TRAINED))
    train_labels = np.repeat(np.arange(TRAINED), per_class)
    held_labels = np.repeat(np.arange(TRAINED), 10)
    train = {"labels": train_labels, "visual": photos(train_labels)}
    calibration = E.fit_calibration(train, {"visual": head}, TRAINED,
                                    held_out={"labels": held_labels,
                                              "visual": photos(held_labels)})
    return rng, mu, photos, head, train, calibration


def _skus(photo_sets):
    """EnrolledSku of photo-only SKUs (a visual-only model), slots in order."""
    return [C.EnrolledSku(slot, np.asarray(v), np.zeros((0, DIM)), None, None, False)
            for slot, v in enumerate(photo_sets)]


def _offset_setting_skus(train, per_sku):
    """10 SKUs re-listing trained classes 0-9, each from `per_sku` of the training photos
    that set the offset b (the calibration's validation sample)."""
    validation = E.balanced_subset(train["labels"], E.VALIDATION_PER_CLASS, seed=1,
                                   cap=E.MAX_VALIDATION)
    return _skus([train["visual"][validation[train["labels"][validation] == c][:per_sku]]
                  for c in range(10)])


def _older_file(tmp_path, calibration, version, drop):
    """The calibration saved as an older version would have written it: without the keys
    containing `drop`, under `version`."""
    E.save_calibration(calibration, tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as data:
        old = {k: data[k] for k in data if drop not in k}
    old["version"] = version
    np.savez(tmp_path / f"v{version}.npz", **old)
    return E.load_calibration(tmp_path / f"v{version}.npz")


def _check(calibration, head, skus, **settings):
    rows = {"visual": np.stack([E.sku_prototypes(calibration, s.visual, s.semantic, None,
                                                 use_text=False)["visual"] for s in skus])}
    return C.check_enrolment(calibration, {"visual": head}, rows, skus, **settings)


def test_new_skus_unlike_the_trained_classes_go_on_the_same_footing():
    rng, mu, photos, head, _, calibration = _world()
    skus = _skus([photos(np.full(4, c)) for c in range(TRAINED, TRAINED + 10)])
    scores, check = _check(calibration, head, skus)
    assert check["leave_one_out"] == {"photos": 40, "skus": 10, "capped": False,
                                      "skus_with_2_photos": 10}
    visual = check["heads"]["visual"]
    same, budget = visual["rules"]["same-footing"], visual["rules"]["budget"]
    assert same["trained"]["photos"] == 500 and same["enrolled"]["photos"] == 40
    assert same["trained"]["top1_before"] == budget["trained"]["top1_before"]
    assert same["trained"]["drop"] <= 0.01 and budget["trained"]["drop"] <= 0.01
    assert same["enrolled"]["named"] > 0.8 > budget["enrolled"]["named"]
    assert visual["chosen"] == "same-footing" and "named most often" in visual["reason"]
    assert scores["visual"].trained_prototypes is not None
    assert C.warnings(check, TRAINED + 10) == []


def test_auto_weighs_the_trained_drop_not_the_tie_rule():
    """New SKUs that look like trained classes (photos of classes 0-9): on the same footing
    they would take many of those classes' photos, so `auto` keeps the budget, although the
    class means pass the held-out tie check; allowing a larger drop picks the other rule."""
    rng, mu, photos, head, _, calibration = _world()
    assert calibration.heads["visual"].same_footing  # the old rule would go on the same footing
    skus = _skus([photos(np.full(4, c)) for c in range(10)])
    scores, check = _check(calibration, head, skus)
    visual = check["heads"]["visual"]
    same, budget = visual["rules"]["same-footing"], visual["rules"]["budget"]
    assert same["trained"]["drop"] > 0.05 and same["trained"]["answered_enrolled"] > 0.05
    assert budget["trained"]["drop"] <= 0.01
    assert visual["chosen"] == "budget" and scores["visual"].trained_prototypes is None
    assert "drops trained top-1" in visual["reason"]
    _, lenient = _check(calibration, head, skus, max_trained_drop=1.0)
    assert lenient["heads"]["visual"]["chosen"] == "same-footing"
    assert same["enrolled"]["named"] > budget["enrolled"]["named"]
    # an explicit rule is used, and both are still measured
    _, forced = _check(calibration, head, skus, scoring="same-footing")
    assert forced["heads"]["visual"]["chosen"] == "same-footing"
    assert forced["heads"]["visual"]["reason"] == "--scoring same-footing"
    assert forced["heads"]["visual"]["rules"]["budget"]["enrolled"] == budget["enrolled"]


def test_a_warning_when_the_trained_classes_take_every_enrolled_photo():
    """With no budget for the enrolled classes, new SKUs re-listing trained products (their
    photos are training photos of classes 0-9 that set the offset) can never beat the trained
    classes: each held-out photo scores below the very photo that set b with its SKU's full
    prototype."""
    rng, mu, photos, head, train, calibration = _world()
    skus = _offset_setting_skus(train, per_sku=4)
    _, check = _check(calibration, head, skus, trained_budget=0.0, scoring="budget")
    budget = check["heads"]["visual"]["rules"]["budget"]
    assert budget["enrolled"]["named"] == 0.0 and budget["enrolled"]["answered_trained"] == 1.0
    warnings = C.warnings(check, TRAINED + 10)
    assert len(warnings) == 1
    assert warnings[0].startswith("enrolled SKUs would almost never be answered: image-only "
                                  "queries (visual head, budget scoring) name them for 0.0% "
                                  "of their held-out catalogue photos (leave-one-out) (40 "
                                  "photos of 10 SKUs")
    assert "100.0% go to a trained class" in warnings[0]
    text = "\n".join(C.describe(check))
    assert "*budget" in text and "enrolled named 0.0% of 40 photos of 10 SKUs" in text


def test_one_photo_per_sku_is_not_measurable_and_auto_falls_back_to_the_held_out_check():
    rng, mu, photos, head, _, calibration = _world()
    skus = _skus([photos(np.full(1, c)) for c in range(TRAINED, TRAINED + 10)])
    _, check = _check(calibration, head, skus)
    assert check["leave_one_out"]["photos"] == 0 and check["leave_one_out"]["skus"] == 0
    visual = check["heads"]["visual"]
    for figures in visual["rules"].values():
        assert figures["enrolled"] is None and figures["trained"] is not None
        assert figures["own_photos"]["photos"] == 10  # the upper bound, reported as such
    assert visual["chosen"] == "same-footing"  # the class means pass the tie check here
    assert visual["reason"].startswith("no enrolled SKU has 2+ photos (leave-one-out not "
                                       "measurable)")
    assert "not measurable (no SKU with 2+ photos)" in "\n".join(C.describe(check))
    # even the photos the prototypes were built from lose to the trained classes (each is a
    # training photo that set the offset, with no budget): warned on that upper bound
    rng, mu, photos, head, train, calibration = _world()
    twins = _offset_setting_skus(train, per_sku=1)
    _, lost = _check(calibration, head, twins, trained_budget=0.0, scoring="budget")
    assert lost["heads"]["visual"]["rules"]["budget"]["own_photos"]["named"] == 0.0
    (warning,) = C.warnings(lost, TRAINED + 10)
    assert "name them for 0.0% of their own catalogue photos they were enrolled from" in warning
    assert "--scoring same-footing would name them more often" in warning


def test_the_queries_are_capped():
    rng, mu, photos, head, _, calibration = _world()
    many = _skus([photos(np.full(C.MAX_QUERY_PHOTOS_PER_SKU + 3, c))
                  for c in range(TRAINED, TRAINED + 2)])
    queries = C.catalogue_queries(calibration, many, ["visual"], leave_one_out=True)
    assert len(queries) == 2 * C.MAX_QUERY_PHOTOS_PER_SKU and queries.capped
    assert queries.skus == 2 and queries.slots.tolist() == [0] * 5 + [1] * 5
    # many SKUs: fewer photos each, so that every SKU is covered while the cap allows
    n = C.MAX_QUERY_PHOTOS // 2 + 10
    crowd = _skus([photos(np.full(3, c % 60)) for c in range(n)])
    spread = C.catalogue_queries(calibration, crowd, ["visual"], leave_one_out=True)
    assert len(spread) == n and spread.skus == n and spread.capped
    assert np.all(np.bincount(spread.slots) == 1)
    crowd = _skus([photos(np.full(2, c % 60)) for c in range(C.MAX_QUERY_PHOTOS + 5)])
    spread = C.catalogue_queries(calibration, crowd, ["visual"], leave_one_out=True)
    assert len(spread) == spread.skus == C.MAX_QUERY_PHOTOS and spread.capped


def test_the_held_out_sample_round_trips_and_old_files_still_load(tmp_path):
    rng, mu, photos, head, _, calibration = _world()
    sample = calibration.heads["visual"].held_out_sample
    assert len(sample.labels) == 500 and sample.features.shape == (500, DIM)
    E.save_calibration(calibration, tmp_path / "c.npz")
    loaded = E.load_calibration(tmp_path / "c.npz").heads["visual"].held_out_sample
    for field in ("features", "labels", "head_top", "head_max"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(sample, field))
    # a version-4 file (no sample): loaded; its check has no trained side
    v4 = _older_file(tmp_path, calibration, 4, ".check.")
    assert v4.heads["visual"].held_out_sample is None
    skus = _skus([photos(np.full(3, c)) for c in range(TRAINED, TRAINED + 3)])
    _, check = _check(v4, head, skus)
    visual = check["heads"]["visual"]
    assert visual["rules"]["budget"]["trained"] is None
    assert visual["reason"].startswith("no held-out photos of the trained classes")


def _text_world(informative: bool, seed=5, per_class=30):
    """50 trained classes with listings: `informative`, a listing is a fixed linear image of
    its class direction (plus noise), so a map fitted on some classes places the others;
    otherwise a listing is a random vector per class, unrelated to how the class looks."""
    rng = np.random.default_rng(seed)
    mu = E.unit(rng.normal(size=(TRAINED, DIM)))
    words = rng.normal(size=(DIM, 12)) if informative else None
    noise_text = rng.normal(size=(TRAINED, 12))

    def examples(labels):
        visual = mu[labels] + rng.normal(size=(len(labels), DIM)) * 0.15
        text = (mu[labels] @ words if informative else noise_text[labels])
        return {"labels": labels, "visual": visual,
                "listing": text + rng.normal(size=text.shape) * 0.05}

    head = E.HeadRows("linear", 6.0 * mu, np.zeros(TRAINED))
    calibration = E.fit_calibration(examples(np.repeat(np.arange(TRAINED), per_class)),
                                    {"visual": head}, TRAINED,
                                    held_out=examples(np.repeat(np.arange(TRAINED), 10)))
    new_listing = (E.unit(rng.normal(size=DIM)) @ words if informative
                   else rng.normal(size=12))
    return head, calibration, new_listing


def _listing_only_check(head, calibration, listing):
    sku = C.EnrolledSku(0, np.zeros((0, DIM)), np.zeros((0, 12)), listing, None, True)
    rows = {"visual": E.sku_prototypes(calibration, sku.visual, sku.semantic, listing)[
        "visual"][None]}
    return C.check_enrolment(calibration, {"visual": head}, rows, [sku])[1]


def test_listing_alone_is_simulated_on_trained_classes_held_out_of_the_text_map():
    """No photo of a SKU enrolled from its listing alone exists to hold out: the calibration
    takes trained classes out of the text map, enrols them from a listing, and scores their
    held-out photos. A listing that says how the product looks names them; one that does not
    never does, and `sicot enroll` warns about SKUs enrolled so."""
    head, good, listing = _text_world(informative=True)
    figures = good.heads["visual"].listing_only
    assert set(figures) == set(E.RULES)
    assert figures["same-footing"]["classes"] == TRAINED // 2  # half of a small model
    assert figures["same-footing"]["photos"] == 10 * TRAINED // 2
    assert figures["same-footing"]["named"] > 0.5
    check = _listing_only_check(head, good, listing)
    assert check["listing_alone"] == {"skus": 1}
    visual = check["heads"]["visual"]
    assert visual["listing_alone"] == figures
    # no SKU has a photo: `auto` weighs the rules on the simulation, not the tie check
    assert all(f["enrolled"] is None and f["own_photos"] is None
               for f in visual["rules"].values())
    assert visual["reason"].startswith(
        "enrolled SKUs named most often within a trained top-1 drop of 1.0 points "
        "(simulated: no enrolled SKU has a photo): ")
    allowed = [r for r, f in visual["rules"].items() if f["trained"]["drop"] <= 0.01]
    assert visual["chosen"] == max(allowed, key=lambda r: figures[r]["named"])
    assert not any("listing alone" in w for w in C.warnings(check, TRAINED + 1))

    head, bad, listing = _text_world(informative=False)
    figures = bad.heads["visual"].listing_only
    assert all(f["named"] < C.NEVER_ANSWERED for f in figures.values())
    check = _listing_only_check(head, bad, listing)
    chosen = check["heads"]["visual"]["chosen"]
    (warning,) = [w for w in C.warnings(check, TRAINED + 1) if "listing alone" in w]
    assert warning.startswith(
        f"SKUs enrolled from their listing alone would almost never be answered: image-only "
        f"queries (visual head, {chosen} scoring) name such SKUs for "
        f"{100 * figures[chosen]['named']:.1f}% of their photos, simulated on 25 trained "
        f"classes enrolled from one of their listings (250 held-out photos")
    assert warning.endswith("1 SKU enrolled so: add photos to them")
    assert "1 SKU from the listing alone: named same-footing" in "\n".join(C.describe(check))
    # SKUs with photos only: no listing-alone figures in the check
    photo_sku = C.EnrolledSku(0, np.ones((2, DIM)), np.zeros((2, 12)), None, None, False)
    _, photo_check = C.check_enrolment(
        bad, {"visual": head}, {"visual": np.ones((1, DIM))}, [photo_sku])
    assert photo_check["listing_alone"] == {"skus": 0}
    assert "listing_alone" not in photo_check["heads"]["visual"]


def test_the_listing_alone_figures_round_trip_and_older_files_say_not_measurable(tmp_path):
    head, calibration, listing = _text_world(informative=False)
    E.save_calibration(calibration, tmp_path / "c.npz")
    loaded = E.load_calibration(tmp_path / "c.npz")
    assert loaded.heads["visual"].listing_only == calibration.heads["visual"].listing_only
    v5 = _older_file(tmp_path, calibration, 5, ".listing_only.")
    assert v5.heads["visual"].listing_only is None
    check = _listing_only_check(head, v5, listing)
    assert check["heads"]["visual"]["listing_alone"] is None
    assert not any("listing alone" in w for w in C.warnings(check, TRAINED + 1))
    assert "1 SKU from the listing alone: not measurable" in "\n".join(C.describe(check))
