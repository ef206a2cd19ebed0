"""Visual search items: what a catalogue photo (or a photo-less listing) is in the search space.

Numpy only, so that the trainer (which writes the items into the SavedModel's exact search,
`sicot.trainer.export`) and the serving side (which reads an approximate index) share it.

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
