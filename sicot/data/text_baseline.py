"""A text-only sanity check of a dataset: multinomial naive Bayes on title + tag words.

    python -m sicot.data.text_baseline data/synth

Trained on the train manifest, scored on the test manifest, numpy only. On synthetic data it
shows that the words carry signal (far above chance) but do not name the class (far below
100%): the side information must be combined with the image, as in the paper.
"""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

from sicot import contract
from sicot.data.manifest import find_split_files, read_manifest


def words(fields: dict) -> list[str]:
    tags = fields.get(contract.TAGS_KEY) or []
    if isinstance(tags, str):
        tags = tags.split("|")
    text = " ".join([fields.get(contract.TITLE_KEY) or ""] + list(tags))
    return text.lower().split()


def _rows(path):
    for row in read_manifest(path):
        if row.fields is not None and row.fields.get(contract.LABEL_KEY):
            yield words(row.fields), str(row.fields[contract.LABEL_KEY])


def text_only_accuracy(data_dir, eval_split: str = "test", alpha: float = 0.1) -> dict:
    files = find_split_files(data_dir)
    train = list(_rows(files["train"]))
    labels = sorted({label for _, label in train})
    label_id = {label: i for i, label in enumerate(labels)}
    vocab: dict[str, int] = {}
    for ws, _ in train:
        for w in ws:
            vocab.setdefault(w, len(vocab))
    counts = np.zeros((len(labels), len(vocab)), np.float64)
    train_counts = np.zeros(len(labels), np.int64)
    for ws, label in train:
        c = label_id[label]
        train_counts[c] += 1
        for w in ws:
            counts[c, vocab[w]] += 1
    # Uniform class prior: the test split is class balanced.
    log_p = np.log(counts + alpha) - np.log(counts.sum(1, keepdims=True) + alpha * len(vocab))

    # Only for this report (default band edges); a trained model's edges are its Transform's.
    correct = {key: [0, 0] for key in ("all", *contract.BANDS)}
    for ws, label in _rows(files[eval_split]):
        if label not in label_id:
            continue
        ids = [vocab[w] for w in ws if w in vocab]
        scores = log_p[:, ids].sum(1) if ids else np.zeros(len(labels))
        truth = label_id[label]
        hit = int(scores.argmax() == truth)
        n = train_counts[truth]
        band = contract.band_of_count(n)
        for key in ("all", band):
            correct[key][0] += hit
            correct[key][1] += 1
    result = {k: (h / n if n else None) for k, (h, n) in correct.items()}
    result["records"] = correct["all"][1]
    result["classes"] = len(labels)
    return result


if __name__ == "__main__":
    print(json.dumps(text_only_accuracy(pathlib.Path(sys.argv[1])), indent=2))
