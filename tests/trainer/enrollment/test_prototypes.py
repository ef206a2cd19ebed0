"""Enrolment maths (numpy) on data with known answers."""
import numpy as np
import pytest

from sicot.trainer.enrollment import prototypes as E


def _world(seed=0, classes=40, dim=6, per_class=30, text_noise=0.3, photo_noise=0.6):
    """Class means mu; photos mu + noise; listings = a linear image of mu + noise."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(classes, dim)) * 2.0
    labels = np.repeat(np.arange(classes), per_class)
    visual = mu[labels] + rng.normal(size=(len(labels), dim)) * photo_noise
    mix = np.linalg.qr(rng.normal(size=(dim, dim)))[0]  # a rotation: listings keep the signal
    listing = mu[labels] @ mix + rng.normal(size=(len(labels), dim)) * text_noise
    return dict(mu=mu, mix=mix, labels=labels, visual=visual, listing=listing,
                semantic=listing, rng=rng)


def test_ridge_recovers_a_linear_map_and_picks_a_small_strength_on_clean_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5))
    coef = rng.normal(size=(5, 3))
    y = x @ coef + 0.5 + rng.normal(size=(200, 3)) * 0.01
    m = E.fit_ridge(x, y)
    np.testing.assert_allclose(m.coef, coef, atol=0.01)
    np.testing.assert_allclose(m.intercept, 0.5, atol=0.01)
    assert m.alpha <= 0.01 and m.loo_mse < 0.001
    noisy = E.fit_ridge(x, rng.normal(size=(200, 3)))  # no signal: strong shrinkage wins
    assert noisy.alpha >= 10 and np.abs(noisy.coef).max() < 0.1


def test_balanced_subset_caps_each_class_and_the_total():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    keep = E.balanced_subset(labels, per_class=4, seed=1)
    assert np.bincount(labels[keep]).tolist() == [4, 3, 4]
    assert len(set(keep)) == len(keep) and np.all(np.diff(keep) > 0)
    assert len(E.balanced_subset(labels, per_class=4, cap=5)) == 5


def test_score_scale_is_the_slope_of_own_logits_against_cosine():
    """For a cosine head with scale 12 the own logit is exactly 12 cos(z, row); with the rows
    at the class means the fitted slope is 12."""
    world = _world(photo_noise=1.5)
    head = E.HeadRows("cosine", world["mu"], None, scale=12.0)
    calibration = E.fit_calibration(world, {"visual": head}, 40)
    assert calibration.heads["visual"].scale == pytest.approx(12.0, rel=0.1)
    assert len(calibration.heads["visual"].trained_max) == 40 * E.VALIDATION_PER_CLASS


def test_offset_lets_enrolled_classes_take_at_most_the_budget_of_validation_photos():
    world = _world(classes=60, per_class=40, photo_noise=1.0)
    mu, rng = world["mu"], world["rng"]
    trained = world["labels"] < 50
    head = E.HeadRows("linear", mu[:50], -0.5 * np.sum(mu[:50] ** 2, 1))
    train = {k: world[k][trained] for k in ("labels", "visual", "listing", "semantic")}
    calibration = E.fit_calibration(train, {"visual": head}, 50)
    h = calibration.heads["visual"]
    prototypes = mu[50:] + rng.normal(size=(10, 6)) * 0.3
    for budget in (0.0, 0.01, 0.1):
        scores = E.enrolled_scores(calibration, "visual", prototypes, budget)
        taken = np.mean(np.max(scores.logits(h.validation), axis=1) > h.trained_max)
        assert taken <= budget
        assert budget == 0 or taken > budget / 3  # the lowest such offset, not any
    with pytest.raises(ValueError, match="trained_budget"):
        E.enrolled_scores(calibration, "visual", prototypes, 1.0)


def test_calibration_weights_the_listing_by_its_measured_noise():
    quiet = E.fit_calibration(_world(text_noise=0.05), {}, 40)
    loud = E.fit_calibration(_world(text_noise=3.0), {}, 40)
    # sigma_v^2 = dim * 0.36 per photo; the listing is worth many photos when it is precise
    assert quiet.photo_variance == pytest.approx(6 * 0.36, rel=0.15)
    assert quiet.text_weight > 10 * loud.text_weight
    assert quiet.text_map.alpha < loud.text_map.alpha


def test_prototypes_combine_photos_and_listing_and_need_some_evidence():
    world = _world()
    calibration = E.fit_calibration(world, {}, 40)
    mu, rng = world["mu"], world["rng"]
    target = 3
    listing = mu[target] @ world["mix"]
    text_only = E.sku_prototypes(calibration, np.zeros((0, 6)), np.zeros((0, 6)), listing)
    assert np.linalg.norm(text_only["visual"] - mu[target]) < 0.3 * np.linalg.norm(mu[target])
    photo = mu[target] + rng.normal(size=(1, 6)) * 0.6
    photo_only = E.sku_prototypes(calibration, photo, photo, None)
    np.testing.assert_allclose(photo_only["visual"], photo[0])
    both = E.sku_prototypes(calibration, photo, photo, listing)
    w = calibration.text_weight
    np.testing.assert_allclose(both["visual"],
                               (photo[0] + w * text_only["visual"]) / (1 + w), rtol=1e-9)
    np.testing.assert_allclose(both["fused"][:6], both["visual"])
    assert set(E.sku_prototypes(calibration, photo, photo, listing,
                                use_text=False)) == {"visual", "semantic", "fused"}
    with pytest.raises(ValueError, match="no photos"):
        E.sku_prototypes(calibration, np.zeros((0, 6)), np.zeros((0, 6)), listing,
                         use_text=False)


def test_enrolled_classes_neither_swallow_nor_are_swallowed_in_a_known_world():
    """An angular world (class means on a sphere, a cosine head at the means, as trained
    cosine heads are): 10 classes enrolled from 5 photos each are recognised well above chance,
    and the trained classes' test accuracy barely moves."""
    world = _world(classes=60, per_class=40, photo_noise=0.5)
    rng = world["rng"]
    mu = 3.0 * E.unit(world["mu"])
    world["visual"] = mu[world["labels"]] + rng.normal(size=world["visual"].shape) * 0.5
    trained = world["labels"] < 50
    head = E.HeadRows("cosine", mu[:50], None, scale=10.0)
    train = {k: world[k][trained] for k in ("labels", "visual", "listing", "semantic")}
    calibration = E.fit_calibration(train, {"visual": head}, 50)
    protos = [E.sku_prototypes(calibration, mu[c] + rng.normal(size=(5, 6)),
                               np.zeros((5, 6)), None)["visual"] for c in range(50, 60)]
    scores = E.enrolled_scores(calibration, "visual", np.stack(protos), 0.01)
    test_labels = np.repeat(np.arange(60), 50)
    queries = mu[test_labels] + rng.normal(size=(len(test_labels), 6)) * 0.5
    trained_logits = head.logits(queries)
    predicted = np.argmax(np.concatenate([trained_logits, scores.logits(queries)], 1), axis=1)
    new = test_labels >= 50
    before = np.mean(np.argmax(trained_logits[~new], 1) == test_labels[~new])
    assert np.mean(predicted[~new] == test_labels[~new]) > before - 0.02
    assert np.mean(predicted[new] == test_labels[new]) > 0.3  # chance is 1/60


def test_calibration_save_and_load_round_trip(tmp_path):
    world = _world()
    head = E.HeadRows("linear", world["mu"], np.zeros(40))
    held_out = {k: world[k][::3] for k in ("labels", "visual", "listing", "semantic")}
    calibration = E.fit_calibration(world, {"visual": head}, 40, held_out=held_out)
    assert calibration.heads["visual"].held_out is not None
    E.save_calibration(calibration, tmp_path / "c.npz")
    loaded = E.load_calibration(tmp_path / "c.npz")
    assert loaded.summary() == calibration.summary()
    np.testing.assert_array_equal(loaded.heads["visual"].class_means,
                                  calibration.heads["visual"].class_means)
    assert loaded.heads["visual"].same_footing == calibration.heads["visual"].same_footing
    x = world["listing"][:3]
    np.testing.assert_allclose(loaded.text_map(x), calibration.text_map(x))
    np.testing.assert_array_equal(loaded.heads["visual"].validation,
                                  calibration.heads["visual"].validation)
    np.savez(tmp_path / "old.npz", text_weight=1.0)  # an older format: refitted, not misread
    assert E.load_calibration(tmp_path / "old.npz") is None


def _linear_world(seed=3, classes=60, trained=50, per_class=40, dim=8):
    """Class directions on a sphere; a photo is its class direction times a random length
    (0.5-2) plus noise, so a linear head's logits grow with |z| as trained linear heads' do."""
    rng = np.random.default_rng(seed)
    mu = E.unit(rng.normal(size=(classes, dim)))

    def photos(labels):
        length = rng.uniform(0.5, 2.0, size=(len(labels), 1))
        return length * (mu[labels] + rng.normal(size=(len(labels), dim)) * 0.15)

    train_labels = np.repeat(np.arange(trained), per_class)
    held_labels = np.repeat(np.arange(trained), 10)
    head = E.HeadRows("linear", 6.0 * mu[:trained], np.zeros(trained))
    return rng, mu, photos, head, ({"labels": train_labels, "visual": photos(train_labels)},
                                   {"labels": held_labels, "visual": photos(held_labels)})


def test_same_footing_scores_trained_and_enrolled_classes_alike_when_the_means_hold_up():
    rng, mu, photos, head, (train, held_out) = _linear_world()
    calibration = E.fit_calibration(train, {"visual": head}, 50, held_out=held_out)
    h = calibration.heads["visual"]
    assert h.same_footing and h.held_out["photos"] == 500
    assert h.held_out["class_means"] >= h.held_out["head"] - E.SAME_FOOTING_TOLERANCE
    budget_only = E.fit_calibration(train, {"visual": head}, 50)  # no held-out photos
    assert not budget_only.heads["visual"].same_footing
    test_labels = np.repeat(np.arange(60), 40)
    queries = photos(test_labels)
    new = test_labels >= 50
    before = np.mean(np.argmax(head.logits(queries[~new]), 1) == test_labels[~new])
    accuracy = {}
    for name, cal in (("same footing", calibration), ("budget", budget_only)):
        protos = np.stack([mu[c] + rng.normal(size=8) * 0.15 for c in range(50, 60)])  # 1 photo
        scores = E.enrolled_scores(cal, "visual", protos, 0.01)
        assert (scores.trained_prototypes is not None) == (name == "same footing")
        logits = np.concatenate([scores.trained_logits(queries, head), scores.logits(queries)], 1)
        predicted = np.argmax(logits, 1)
        accuracy[name] = (np.mean(predicted[new] == test_labels[new]),
                          np.mean(predicted[~new] == test_labels[~new]))
    assert accuracy["same footing"][0] > 0.5  # chance is 1/60
    assert accuracy["same footing"][0] > accuracy["budget"][0] + 0.1
    assert accuracy["same footing"][1] >= before - 0.01


def test_same_footing_is_refused_when_the_class_means_lose_on_held_out_photos():
    """Two noisy training photos per class: their means are poor stand-ins for a head whose
    rows sit at the true class directions, and the held-out photos show it."""
    rng, mu, photos, head, (_, held_out) = _linear_world()
    labels = np.repeat(np.arange(50), 2)
    train = {"labels": labels, "visual": mu[labels] + rng.normal(size=(100, 8)) * 0.6}
    calibration = E.fit_calibration(train, {"visual": head}, 50, held_out=held_out)
    h = calibration.heads["visual"]
    assert not h.same_footing
    assert h.held_out["class_means"] < h.held_out["head"] - E.SAME_FOOTING_TOLERANCE
    scores = E.enrolled_scores(calibration, "visual", mu[50:52], 0.01)
    assert scores.trained_prototypes is None and scores.offset != 0.0
    # --scoring overrides the check either way
    forced = E.enrolled_scores(calibration, "visual", mu[50:52], 0.01, "same-footing")
    np.testing.assert_array_equal(forced.trained_prototypes, h.class_means)
    assert forced.offset == 0.0
    with pytest.raises(ValueError, match="scoring"):
        E.enrolled_scores(calibration, "visual", mu[50:52], 0.01, "sometimes")


def test_a_learned_listing_projection_feeds_the_text_map(tmp_path):
    """A model with a listing -> visual projection R gives `listing_visual` (R s0): the text
    map reads it, not s0; here s0 carries nothing and R s0 the class, so only reading R s0
    places a listing near its class."""
    world = _world()
    rng, mu = world["rng"], world["mu"]
    train = dict(world, listing=rng.normal(size=world["listing"].shape),
                 listing_visual=world["listing"])
    calibration = E.fit_calibration(train, {}, 40)
    assert calibration.text_input == "listing_visual"
    assert E.fit_calibration(world, {}, 40).text_input == "listing"
    target = 3
    listing_visual = mu[target] @ world["mix"]
    no_photo = np.zeros((0, 6))
    proto = E.sku_prototypes(calibration, no_photo, no_photo, rng.normal(size=6),
                             listing_visual=listing_visual)["visual"]
    assert np.linalg.norm(proto - mu[target]) < 0.3 * np.linalg.norm(mu[target])
    with pytest.raises(ValueError, match="listing_visual"):
        E.sku_prototypes(calibration, no_photo, no_photo, rng.normal(size=6))
    E.save_calibration(calibration, tmp_path / "c.npz")
    loaded = E.load_calibration(tmp_path / "c.npz")
    assert loaded.text_input == "listing_visual" and loaded.summary() == calibration.summary()
    with pytest.raises(ValueError, match="text_input='visual'"):
        E.Calibration(None, 0.0, 1.0, 1.0, {}, "visual")
