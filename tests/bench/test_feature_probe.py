"""bench/feature_probe.py: the numpy classifiers it compares, on data whose answer is known."""
import importlib.util
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "feature_probe", os.path.join(REPO, "bench", "feature_probe.py"))
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def _clusters(per_class, dim=6, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(per_class), dim)) * 3
    y = np.repeat(np.arange(len(per_class)), per_class)
    return centres[y] + spread * rng.normal(size=(len(y), dim)), y, centres


def test_balanced_linear_fits_separable_imbalanced_classes():
    x, y, centres = _clusters([50, 10, 2])
    f = probe.fit_linear(x, y, 3)
    rng = np.random.default_rng(1)
    test_y = np.repeat(np.arange(3), 20)
    test_x = centres[test_y] + 0.3 * rng.normal(size=(60, 6))
    acc = probe.band_accuracy(f(test_x), test_y, np.array([150, 50, 2]))
    assert acc["overall"] == 100.0 and acc["few"] == 100.0


def test_class_profiles_are_df_idf_rows_of_unit_norm():
    tokens = np.array([[2, 3, 0], [2, 4, 0], [2, 5, 0], [0, 0, 0]])
    labels = np.array([0, 0, 1, 1])
    g = probe.class_profiles(tokens, labels, 2, 6)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, rtol=1e-6)
    # Word 2 is in every class (idf 0): no weight; padding/OOV ids never count. Words 3 and 4
    # are each in half of class 0's examples: equal weight; word 5 is class 1's only word.
    assert g[0, 2] == 0 and g[1, 2] == 0 and g[0, :2].sum() == 0
    np.testing.assert_allclose(g[0, 3], g[0, 4])
    np.testing.assert_allclose(g[1], [0, 0, 0, 0, 0, 1.0], atol=1e-9)


def test_composed_weights_predict_a_class_never_seen_from_its_words():
    # Classes 0-2 are one-word classes; class 3 has only words 0 and 1. A composed head with
    # no free weights gives class 3 the sum of words 0 and 1, so it recognises a class-3
    # point although class 3 has a single training example.
    rng = np.random.default_rng(0)
    words = rng.normal(size=(3, 8)) * 3
    profiles = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], float)
    profiles /= np.linalg.norm(profiles, axis=1, keepdims=True)
    y = np.array([0] * 40 + [1] * 40 + [2] * 40 + [3])
    means = np.array([words[0], words[1], words[2], words[0] + words[1]])
    x = means[y] + 0.2 * rng.normal(size=(len(y), 8))
    f = probe.fit_linear(x, y, 4, profiles, free=False, steps=500)
    test = means[3] + 0.2 * rng.normal(size=(20, 8))
    assert (f(test).argmax(1) == 3).mean() >= 0.9


def test_variation_transfer_adds_features_around_the_tail_class_only():
    x, y, centres = _clusters([30, 25, 3], seed=2)
    counts = np.bincount(y)
    profiles = np.eye(3)
    xa, ya = probe.variation_transfer(x, y, counts, profiles, per_class=10, donors=2)
    assert len(xa) == len(x) + 10 and (ya[len(x):] == 2).all()
    # The new points stay near the tail class mean (head offsets have the head's spread).
    dist = np.linalg.norm(xa[len(x):] - x[y == 2].mean(0), axis=1)
    assert dist.max() < np.linalg.norm(centres[0] - centres[2])
