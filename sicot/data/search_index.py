"""Visual search items: what a catalogue photo (or a photo-less listing) is in the search space.

Numpy only, so that the trainer (which writes the items into the SavedModel's exact search,
`sicot.trainer.export.saved_model`) and the serving side (which reads an approximate index) share it.

An item is one catalogue photo, id '<label>/<photo path>', or, for a SKU without photos, its
listing, id '<label>/#listing'. Its vectors (one rule shared by the SavedModel's exact search,
`sicot index` and the tests):
  image       unit(v)                       v: the visual embedding of the photo
  image_text  [unit(v), unit(s)] / sqrt(2)  s: the semantic embedding of the SKU's listing
                                             queried by that photo (text models only)
A photo-less listing uses the text-estimated prototype t (`enrollment.sku_prototypes`) for v
and the unqueried listing embedding s0 for s. A query is built the same way from the shopper's
photo (and text), so a score is a cosine similarity in [-1, 1].
"""
from __future__ import annotations

import dataclasses

import numpy as np

LISTING_ITEM = "#listing"
ITEMS_FILE = "search_items.npz"


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def item_vectors(visual, semantic=None):
    """(image [N, D], image_text [N, 2D] or None) from embeddings [N, D]."""
    image = unit(visual)
    if semantic is None:
        return image, None
    return image, np.concatenate([image, unit(semantic)], axis=-1) / np.sqrt(2.0)


@dataclasses.dataclass
class SearchItems:
    item_ids: np.ndarray              # [N] str
    labels: np.ndarray                # [N] str
    image: np.ndarray                 # [N, D] float32, unit rows
    image_text: np.ndarray | None     # [N, 2D] float32, unit rows (text models)

    def __len__(self):
        return len(self.item_ids)

    @classmethod
    def empty(cls, dim: int, with_text: bool):
        return cls(np.zeros((0,), object), np.zeros((0,), object), np.zeros((0, dim), np.float32),
                   np.zeros((0, 2 * dim), np.float32) if with_text else None)

    def without_labels(self, labels) -> "SearchItems":
        keep = ~np.isin(self.labels.astype(str), np.asarray(list(labels), dtype=str))
        return SearchItems(self.item_ids[keep], self.labels[keep], self.image[keep],
                           None if self.image_text is None else self.image_text[keep])

    def concat(self, other: "SearchItems") -> "SearchItems":
        return SearchItems(
            np.concatenate([self.item_ids, other.item_ids]).astype(object),
            np.concatenate([self.labels, other.labels]).astype(object),
            np.concatenate([self.image, other.image]).astype(np.float32),
            None if self.image_text is None
            else np.concatenate([self.image_text, other.image_text]).astype(np.float32))

    def save(self, path) -> None:
        arrays = {"item_ids": self.item_ids.astype(str), "labels": self.labels.astype(str),
                  "image": self.image}
        if self.image_text is not None:
            arrays["image_text"] = self.image_text
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path) -> "SearchItems":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["item_ids"].astype(object), data["labels"].astype(object),
                       data["image"].astype(np.float32),
                       data["image_text"].astype(np.float32) if "image_text" in data else None)


# ---------------------------------------------------------------------------------------------
# Approximate search for large catalogues (`sicot index`), with FAISS

INDEX_FILE = "index.faiss"
INDEX_ITEMS_FILE = "items.npz"
INDEX_META_FILE = "index.json"
INDEX_KINDS = ("hnsw", "ivf", "flat")


def exact_search(vectors, queries, k: int, block: int = 262_144):
    """(scores [B, k], positions [B, k]) of the exact inner-product top k (unit rows: cosine),
    in blocks so that a million items fit in memory."""
    vectors = np.asarray(vectors, np.float32)
    queries = np.asarray(queries, np.float32)
    k = min(int(k), len(vectors))
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), block):
        scores = queries @ vectors[start:start + block].T
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(scores, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        keep = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_s, best_i


class AnnIndex:
    """An approximate nearest-neighbour index over unit item vectors (inner product = cosine).

    Kinds (FAISS, `faiss-cpu` pinned in requirements/constraints.txt):
      hnsw  IndexHNSWFlat (Malkov & Yashunin 2018): graph search, no training; `m` links per
            node, `ef_construction` at build, `ef_search` at query (recall against speed).
      ivf   IndexIVFFlat: k-means into `nlist` cells (default 4 sqrt(N)), `nprobe` cells visited.
      flat  IndexFlatIP: exact, for reference and small catalogues.
    """

    def __init__(self, index, item_ids, labels, meta: dict):
        self.index = index
        self.item_ids = np.asarray(item_ids, object)
        self.labels = np.asarray(labels, object)
        self.meta = dict(meta)

    def __len__(self):
        return int(self.index.ntotal)

    @classmethod
    def build(cls, vectors, item_ids, labels, kind: str = "hnsw", m: int = 32,
              ef_construction: int = 80, ef_search: int = 64, nlist: int | None = None,
              nprobe: int = 32, seed: int = 0) -> "AnnIndex":
        import faiss

        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind {kind!r}: expected one of {list(INDEX_KINDS)}")
        vectors = np.ascontiguousarray(unit(vectors), np.float32)
        if len(vectors) != len(item_ids) or len(vectors) != len(labels):
            raise ValueError(f"{len(vectors)} vectors, {len(item_ids)} item ids and "
                             f"{len(labels)} labels: they must match")
        dim = vectors.shape[1]
        meta = {"kind": kind, "dim": dim, "items": len(vectors), "metric": "inner_product",
                "faiss": faiss.__version__}
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
            meta.update(m=m, ef_construction=ef_construction, ef_search=ef_search)
        elif kind == "ivf":
            nlist = nlist or max(1, int(4 * np.sqrt(len(vectors))))
            nlist = min(nlist, len(vectors))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            sample = vectors
            if len(vectors) > 256 * nlist:  # FAISS's own cap on k-means training points
                sample = vectors[np.random.default_rng(seed).choice(
                    len(vectors), 256 * nlist, replace=False)]
            index.train(sample)
            index.nprobe = nprobe
            meta.update(nlist=nlist, nprobe=nprobe)
        else:
            index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return cls(index, item_ids, labels, meta)

    def set_search_effort(self, ef_search: int | None = None, nprobe: int | None = None):
        import faiss

        if self.meta["kind"] == "hnsw" and ef_search:
            faiss.downcast_index(self.index).hnsw.efSearch = int(ef_search)
            self.meta["ef_search"] = int(ef_search)
        if self.meta["kind"] == "ivf" and nprobe:
            faiss.extract_index_ivf(self.index).nprobe = int(nprobe)
            self.meta["nprobe"] = int(nprobe)

    def search(self, queries, k: int = 10):
        """(scores [B, k], positions [B, k]) for query vectors [B, D] (normalised here);
        position -1 (score -inf) where fewer than k items were found."""
        queries = np.ascontiguousarray(unit(np.atleast_2d(queries)), np.float32)
        scores, positions = self.index.search(queries, int(min(k, len(self))))
        return scores, positions

    def hits(self, queries, k: int = 10) -> list:
        """[[{"item_id", "label", "score"}, ...] per query], best first."""
        scores, positions = self.search(queries, k)
        return [[{"item_id": str(self.item_ids[p]), "label": str(self.labels[p]),
                  "score": float(s)} for s, p in zip(row_s, row_p) if p >= 0]
                for row_s, row_p in zip(scores, positions)]

    def save(self, folder) -> None:
        import json
        import os

        import faiss

        os.makedirs(folder, exist_ok=True)
        faiss.write_index(self.index, os.path.join(folder, INDEX_FILE))
        np.savez(os.path.join(folder, INDEX_ITEMS_FILE), item_ids=self.item_ids.astype(str),
                 labels=self.labels.astype(str))
        with open(os.path.join(folder, INDEX_META_FILE), "w") as f:
            json.dump(self.meta, f, indent=2)

    @classmethod
    def load(cls, folder) -> "AnnIndex":
        import json
        import os

        import faiss

        from sicot.errors import UserError

        paths = [os.path.join(folder, n) for n in (INDEX_FILE, INDEX_ITEMS_FILE, INDEX_META_FILE)]
        missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
        if missing:
            raise UserError(f"--index {folder}: not a `sicot index` folder (no {missing})")
        with open(paths[2]) as f:
            meta = json.load(f)
        with np.load(paths[1], allow_pickle=False) as data:
            item_ids, labels = data["item_ids"].astype(object), data["labels"].astype(object)
        return cls(faiss.read_index(paths[0]), item_ids, labels, meta)
