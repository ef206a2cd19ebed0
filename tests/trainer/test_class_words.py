"""class_word_table: df-idf top-K words per class from training titles and tags."""
import numpy as np
import pytest

from sicot.trainer.class_words import class_word_table


def test_words_every_class_shares_score_zero_and_class_words_rank_first():
    # Word 2 ("promo") is in every class; word 3 only in class 0, word 4 only in class 1;
    # word 5 in one of class 0's three examples.
    tokens = np.array([[2, 3, 0, 0], [2, 3, 5, 0], [3, 2, 3, 1],  # class 0 (1 = OOV)
                       [2, 4, 0, 0]])                             # class 1
    labels = np.array([0, 0, 0, 1])
    ids, weights = class_word_table(tokens, labels, num_classes=2, top_k=3)
    assert ids.shape == weights.shape == (2, 3)
    assert list(ids[0, :2]) == [3, 5] and weights[0, 2] == 0  # word 2: idf log(3/3) = 0
    assert ids[1, 0] == 4 and weights[1, 1:].sum() == 0
    # A repeated word counts once per example: df(0, 3) = 3/3, df(0, 5) = 1/3 (same idf).
    np.testing.assert_allclose(weights[0, :2], [0.75, 0.25], rtol=1e-6)
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-6)


def test_a_class_without_examples_gets_an_empty_row():
    tokens = np.array([[2, 3], [2, 4]])
    ids, weights = class_word_table(tokens, np.array([0, 1]), num_classes=3, top_k=2)
    assert weights[2].sum() == 0 and ids[2].sum() == 0
    np.testing.assert_allclose(weights[:2].sum(1), 1.0, rtol=1e-6)


def test_top_k_keeps_the_highest_scores_and_ignores_bad_labels():
    tokens = np.array([[2, 3, 4, 5, 6]] * 3 + [[7, 0, 0, 0, 0]])
    labels = np.array([0, 0, 5, -1])  # labels 5 and -1 are outside [0, 2): ignored
    ids, weights = class_word_table(tokens, labels, num_classes=2, top_k=2)
    assert set(ids[0]) <= {2, 3, 4, 5, 6} and weights[0].sum() == pytest.approx(1.0)
    assert weights[1].sum() == 0


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="tokens .* and labels"):
        class_word_table(np.zeros((3, 2)), np.zeros(4), num_classes=2, top_k=2)
