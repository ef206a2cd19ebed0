"""Offline probe of a trained model's frozen outputs: what would other image-only classifiers on
the same tower reach, and what does the tower know about the product attributes? Seconds per
variant instead of a training run per variant (docs/experiments.md, round 3).

    .venv/bin/python bench/feature_probe.py --run RUN_DIR --work WORK_DIR [--data DATA_DIR]

RUN_DIR is a `sicot train --out` folder (its run/model.keras is loaded), WORK_DIR that run's
`--work-dir` (transformed train/eval/test examples). The three splits go through the model
without augmentation (`training=False`). On the test split (bands by training images per class,
as `sicot evaluate`) it scores:
- `visual_head`: the model's own image-only head (equals `sicot evaluate`'s image-only row);
- `visual_head_posthoc`: the same logits - tau log prior, tau chosen on the eval split
  (`posthoc_tau_from_eval`), and `posthoc_test_curve` for tau in 0..1: few-shot accuracy
  can be bought with many-shot accuracy by any model, so models compare at matched points;
- `balanced_lr`: a class-balanced softmax regression trained to convergence on the frozen,
  L2-normalised train embeddings (a converged cRT stage 2);
- `text_composed`: the same, but each class's weights are composed from words,
  w_c = M g_c, g_c the class's df-idf word profile from its training titles and tags
  (`class_words.py`'s score), M learned on all classes: tail classes get weights built from
  words learned on head classes;
- `text_composed_plus_free`: w_c = M g_c + a free w'_c (weight decay 1e-2 on w');
- `variation_transfer`: balanced_lr with 60 extra features per few-shot class, each a tail
  image's feature plus the offset of a head image from its class mean, the head class drawn
  from the 5 classes whose word profiles are closest (text-guided feature transfer).
With `--data` of a `sicot synth` folder (its classes.jsonl holds the true attributes, used here
for diagnosis only, never for training a model):
- `oracle_attribute_composed`: text_composed with the true attribute one-hots as g_c;
- `attribute_probe`: a balanced linear probe per attribute on the frozen embedding, accuracy
  on all and on few-shot test images;
- `few_shot_errors`: the wrong few-shot answers by how many of the 5 attributes differ
  between the true and the predicted class.
The eval split is scored too (`*_eval`), for choosing between variants without the test split.
Prints JSON; `--json` also writes it.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os

import numpy as np

from sicot import contract
from sicot.trainer.class_words import class_word_table
from sicot.trainer.transform import images as image_ops


def load_split(work_dir, split, tft_output):
    import tensorflow as tf

    files = glob.glob(os.path.join(work_dir, "transform", "transformed", f"{split}-*"))
    if not files:
        raise SystemExit(f"--work {work_dir}: no transformed {split} examples")
    from sicot.trainer.input import transform_image_size

    spec = tft_output.transformed_feature_spec()
    keys = (contract.IMAGE_XF, contract.TOKENS_XF, contract.LABEL_XF)
    size = transform_image_size(tft_output)

    def parse(records):  # the stored JPEG decoded as the trainer's eval input does
        parsed = tf.io.parse_example(records, {k: spec[k] for k in keys})
        parsed[contract.IMAGE_XF] = image_ops.model_images(parsed[contract.IMAGE_XF], size)
        return parsed

    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(256).map(parse)
    images, tokens, labels = [], [], []
    for b in ds.as_numpy_iterator():
        images.append(b[contract.IMAGE_XF].astype("float32"))
        tokens.append(b[contract.TOKENS_XF].astype("int32"))
        labels.append(b[contract.LABEL_XF].reshape(-1))
    return np.concatenate(images), np.concatenate(tokens), np.concatenate(labels)


def model_outputs(model, images, tokens):
    out = {}
    for start in range(0, len(images), 256):
        y = model({contract.IMAGE_INPUT: images[start:start + 256],
                   contract.TOKENS_INPUT: tokens[start:start + 256]}, training=False)
        for k in (contract.EMBEDDING, contract.VISUAL_LOGITS):
            out.setdefault(k, []).append(np.asarray(y[k]))
    return {k: np.concatenate(v) for k, v in out.items()}


def band_accuracy(scores, labels, counts, edges=contract.DEFAULT_BAND_EDGES):
    hit = scores.argmax(-1) == labels
    band = np.array([contract.band_of_count(int(c), edges) for c in counts])[labels]
    bands = {contract.OVERALL: np.ones_like(hit), **{b: band == b for b in contract.BANDS}}
    return {b: round(100 * float(hit[m].mean()), 1) for b, m in bands.items() if m.any()}


def l2n(x):
    return x / np.sqrt((x ** 2).sum(-1, keepdims=True) + 1e-12)


def class_profiles(tokens, labels, num_classes, vocab):
    """Every word's df-idf score per class (`class_words.class_word_table` with K = the whole
    vocabulary) as dense [C, vocab] rows, L2-normalised."""
    ids, weights = class_word_table(tokens, labels, num_classes, top_k=vocab)
    g = np.zeros((num_classes, vocab))
    np.add.at(g, (np.repeat(np.arange(num_classes), vocab), ids.reshape(-1)),
              weights.reshape(-1))
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-9)


def fit_linear(x, y, num_classes, profiles=None, free=True, free_decay=1e-4,
               composed_decay=1e-4, steps=300, lr=0.01):
    """Class-balanced softmax regression, full batch, Adam; logits = x W + (x M) G^T + b."""
    n, dim = x.shape
    weight = 1.0 / np.maximum(np.bincount(y, minlength=num_classes), 1)[y]
    weight = weight / weight.sum()
    onehot = np.zeros((n, num_classes))
    onehot[np.arange(n), y] = 1
    params = {"b": np.zeros(num_classes)}
    if free:
        params["W"] = np.zeros((dim, num_classes))
    if profiles is not None:
        params["M"] = np.zeros((dim, profiles.shape[1]))

    def logits(p, q):
        z = np.zeros((len(q), num_classes)) + p["b"]
        if "W" in p:
            z = z + q @ p["W"]
        if "M" in p:
            z = z + (q @ p["M"]) @ profiles.T
        return z

    m = {k: np.zeros_like(v) for k, v in params.items()}
    s = {k: np.zeros_like(v) for k, v in params.items()}
    for t in range(1, steps + 1):
        z = logits(params, x)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        err = (p - onehot) * weight[:, None]
        grads = {"b": err.sum(0)}
        if "W" in params:
            grads["W"] = x.T @ err + free_decay * params["W"]
        if "M" in params:
            grads["M"] = x.T @ (err @ profiles) + composed_decay * params["M"]
        for k, g in grads.items():
            m[k] = 0.9 * m[k] + 0.1 * g
            s[k] = 0.999 * s[k] + 0.001 * g * g
            params[k] -= lr * (m[k] / (1 - 0.9 ** t)) / (np.sqrt(s[k] / (1 - 0.999 ** t)) + 1e-8)
    return lambda q: logits(params, q)


def variation_transfer(x, y, counts, profiles, per_class=60, donors=5, seed=0):
    """Extra features for few-shot classes: tail feature + (head feature - its class mean),
    the head class among the `donors` classes with the closest word profiles."""
    rng = np.random.default_rng(seed)
    means = np.stack([x[y == c].mean(0) for c in range(len(counts))])
    head = np.where(counts >= 20)[0]
    similarity = profiles @ profiles.T
    xs, ys = [], []
    for c in np.where(counts < 20)[0]:
        own = np.where(y == c)[0]
        if not len(own):
            continue
        near = head[np.argsort(-similarity[c, head])[:donors]]
        for _ in range(per_class):
            a = rng.choice(near)
            j = rng.choice(np.where(y == a)[0])
            xs.append(x[rng.choice(own)] + x[j] - means[a])
            ys.append(c)
    return np.concatenate([x, np.asarray(xs)]), np.concatenate([y, np.asarray(ys)])


def attribute_table(data_dir, class_names):
    """[C, 5] attribute value ids of each class (from a synth folder's classes.jsonl)."""
    with open(os.path.join(data_dir, "classes.jsonl")) as f:
        rows = {r["label"]: r["attributes"] for r in map(json.loads, f)}
    names = list(next(iter(rows.values())))
    values = {a: sorted({rows[c][a] for c in class_names}) for a in names}
    return names, np.array([[values[a].index(rows[c][a]) for a in names] for c in class_names])


def probe(run_dir, work_dir, data_dir=None):
    import keras
    import tensorflow_transform as tft

    import sicot.trainer.model.sicot_model  # noqa: F401  (registers the layers)
    from sicot.trainer.transform.output import read_class_counts

    tft_output = tft.TFTransformOutput(os.path.join(work_dir, "transform", "transform_graph"))
    class_names, counts = read_class_counts(tft_output)
    counts = np.asarray(counts)
    num_classes = len(counts)
    model = keras.saving.load_model(os.path.join(run_dir, "run", "model.keras"))
    splits = {s: load_split(work_dir, s, tft_output) for s in ("train", "eval", "test")}
    outs = {s: model_outputs(model, d[0], d[1]) for s, d in splits.items()}
    labels = {s: d[2] for s, d in splits.items()}
    x = {s: 10.0 * l2n(o[contract.EMBEDDING]) for s, o in outs.items()}
    vocab = max(int(d[1].max()) for d in splits.values()) + 1
    profiles = class_profiles(splits["train"][1], labels["train"], num_classes, vocab)

    result = {}

    def score(name, scores_of):
        for split in ("test", "eval"):
            key = name if split == "test" else f"{name}_eval"
            result[key] = band_accuracy(scores_of(split), labels[split], counts)

    score("visual_head", lambda s: outs[s][contract.VISUAL_LOGITS])
    # Post-hoc logit adjustment (Menon et al. 2021, eq. 9): visual logits - tau log prior,
    # tau chosen on the eval split's overall (class-balanced) top-1; the test curve shows the
    # few-shot / many-shot trade-off every model can move along.
    log_prior = np.log(np.maximum(counts, 1) / np.maximum(counts, 1).sum())
    taus = [round(t, 3) for t in np.arange(-0.5, 1.51, 0.125)]
    eval_overall = [band_accuracy(outs["eval"][contract.VISUAL_LOGITS] - t * log_prior,
                                  labels["eval"], counts)["overall"] for t in taus]
    tau = taus[int(np.argmax(eval_overall))]
    result["posthoc_tau_from_eval"] = tau
    score("visual_head_posthoc", lambda s: outs[s][contract.VISUAL_LOGITS] - tau * log_prior)
    result["posthoc_test_curve"] = {
        str(t): band_accuracy(outs["test"][contract.VISUAL_LOGITS] - t * log_prior, labels["test"],
                              counts) for t in (0.0, 0.25, 0.5, 0.75, 1.0)}
    f = fit_linear(x["train"], labels["train"], num_classes)
    score("balanced_lr", lambda s: f(x[s]))
    f = fit_linear(x["train"], labels["train"], num_classes, profiles, free=False)
    score("text_composed", lambda s: f(x[s]))
    f = fit_linear(x["train"], labels["train"], num_classes, profiles, free_decay=1e-2)
    score("text_composed_plus_free", lambda s: f(x[s]))
    xa, ya = variation_transfer(x["train"], labels["train"], counts, profiles)
    f = fit_linear(xa, ya, num_classes)
    score("variation_transfer", lambda s: f(x[s]))

    if data_dir:
        names, attrs = attribute_table(data_dir, class_names)
        onehots = np.concatenate([np.eye(attrs[:, i].max() + 1)[attrs[:, i]]
                                  for i in range(len(names))], axis=1)
        onehots /= np.linalg.norm(onehots, axis=1, keepdims=True)
        f = fit_linear(x["train"], labels["train"], num_classes, onehots, free=False)
        score("oracle_attribute_composed", lambda s: f(x[s]))
        few = counts[labels["test"]] < 20
        result["attribute_probe"] = {}
        for i, name in enumerate(names):
            k = attrs[:, i].max() + 1
            f = fit_linear(x["train"], attrs[labels["train"], i], k)
            hit = f(x["test"]).argmax(1) == attrs[labels["test"], i]
            result["attribute_probe"][name] = {"all": round(100 * hit.mean(), 1),
                                               "few": round(100 * hit[few].mean(), 1)}
        predicted = outs["test"][contract.VISUAL_LOGITS].argmax(1)
        wrong = few & (predicted != labels["test"])
        differing = (attrs[labels["test"][wrong]] != attrs[predicted[wrong]])
        by_count = collections.Counter(differing.sum(1).tolist())
        single = collections.Counter(names[j] for row in differing if row.sum() == 1
                                     for j in np.where(row)[0])
        result["few_shot_errors"] = {"few_test_images": int(few.sum()),
                                     "wrong": int(wrong.sum()),
                                     "by_attributes_differing": dict(sorted(by_count.items())),
                                     "single_attribute": dict(single)}
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a `sicot train --out` folder")
    p.add_argument("--work", required=True, help="that run's --work-dir")
    p.add_argument("--data", help="the synth dataset folder (classes.jsonl) for the "
                                  "attribute diagnosis")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    result = probe(args.run, args.work, args.data)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
