"""sicot.data.search_index: the blocked exact top-k and the FAISS index against it, on random
unit vectors (real FAISS, a few thousand items: seconds)."""
import numpy as np
import pytest

from sicot.data.search_index import AnnIndex, exact_search, unit
from sicot.errors import UserError


def _vectors(n, dim=16, seed=0):
    return unit(np.random.default_rng(seed).normal(size=(n, dim)))


def test_exact_search_matches_a_full_sort_across_blocks():
    items, queries = _vectors(700), _vectors(5, seed=1)
    scores, positions = exact_search(items, queries, 7, block=100)
    full = queries @ items.T
    order = np.argsort(-full, axis=1)[:, :7]
    np.testing.assert_array_equal(positions, order)
    np.testing.assert_allclose(scores, np.take_along_axis(full, order, 1), rtol=1e-6)
    assert exact_search(items[:3], queries, 10)[1].shape == (5, 3)  # k capped at N


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "flat"])
def test_index_recall_against_exact_and_round_trip(kind, tmp_path):
    items, queries = _vectors(3000), _vectors(50, seed=1)
    ids = np.array([f"sku{i // 3}/p{i % 3}.jpg" for i in range(len(items))], object)
    labels = np.array([f"sku{i // 3}" for i in range(len(items))], object)
    index = AnnIndex.build(items, ids, labels, kind=kind, nprobe=64)  # of 219 cells
    _, exact = exact_search(items, queries, 10)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found)])
    assert recall >= (1.0 if kind == "flat" else 0.9), recall
    # an item's own vector finds the item first, with score 1
    hits = index.hits(items[[5, 2999]], 3)
    assert [h[0]["item_id"] for h in hits] == [ids[5], ids[2999]]
    assert [h[0]["label"] for h in hits] == ["sku1", "sku999"]
    assert hits[0][0]["score"] == pytest.approx(1.0, abs=1e-5)
    index.save(str(tmp_path / "ix"))
    again = AnnIndex.load(str(tmp_path / "ix"))
    assert len(again) == len(items) and again.meta["kind"] == kind
    assert again.hits(items[[5]], 3) == index.hits(items[[5]], 3)


def test_index_errors(tmp_path):
    with pytest.raises(ValueError, match="'lsh'"):
        AnnIndex.build(_vectors(10), ["a"] * 10, ["a"] * 10, kind="lsh")
    with pytest.raises(ValueError, match="10 vectors, 9 item ids"):
        AnnIndex.build(_vectors(10), ["a"] * 9, ["a"] * 10)
    with pytest.raises(UserError, match="not a `sicot index` folder"):
        AnnIndex.load(str(tmp_path))
