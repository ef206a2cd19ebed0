"""Issue 13, session 4: how well a listing places its SKU, per model (numpy on cached embeddings).

    flock /work/locks/bench.lock nice -n 8 .venv/bin/python \\
        docs/results/issue13/listing_loss/listing_probe.py --data DATA RUN/sicot [RUN/sicot ...]

Reuses `bench/enrollment_probe.py`'s cache (MODEL/probe_cache.npz: training examples, the
catalogue, the test split). Per model, new-SKU test photos scored against
  - `new only`: the 20 new SKUs' listing-only prototypes alone (no trained class competes);
  - `general`: every class on the same footing (trained classes by their class means, cosine),
    new SKUs / trained classes top-1 %,
for the listing read by: a ridge map of s0 (the shipped rule for models without a projection),
a ridge map of R s0 and R s0 directly (models trained with `listing_weight`). Also the ridge's
leave-one-out error against one photo's variance (how many photos a listing is worth), and one
photo + listing with the calibration's weight. Prints JSON.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "bench"))
from enrollment_probe import embed_everything  # noqa: E402

from sicot.trainer.enrollment import prototypes as E  # noqa: E402


def probe(e):
    C = len(e["class_names"])
    labels = e["train_labels"]
    mu, counts = E.class_means(e["train_visual"], labels, C)
    new = np.isin(e["test_labels"], e["cat_labels"])
    tv = E.unit(e["test_visual"])
    names = np.concatenate([e["class_names"], e["cat_labels"]])
    photo_variance = E.fit_calibration({"labels": labels, "visual": e["train_visual"]}, {},
                                       C).photo_variance

    def new_only(P):
        pred = e["cat_labels"][np.argmax(tv[new] @ E.unit(P).T, axis=1)]
        return round(100 * float(np.mean(pred == e["test_labels"][new])), 1)

    def general(P):
        pred = names[np.argmax(np.concatenate([tv @ E.unit(mu).T, tv @ E.unit(P).T], 1), 1)]
        hit = pred == e["test_labels"]
        return round(100 * float(hit[new].mean()), 1), round(100 * float(hit[~new].mean()), 1)

    idx = E.balanced_subset(labels)
    one_photo = np.stack([e["cat_visual"][e["cat_sku"] == i][0]
                          for i in range(len(e["cat_labels"]))])
    out = {"photo_variance": round(photo_variance, 2), "1 photo": {
        "new_only": new_only(one_photo), "general": general(one_photo)}}
    inputs = [("ridge(s0)", e["train_listing"], e["cat_listing"])]
    if "train_listing_visual" in e:
        inputs.append(("ridge(R s0)", e["train_listing_visual"], e["cat_listing_visual"]))
        P = e["cat_listing_visual"]
        out["R s0 direct"] = {"new_only": new_only(P), "general": general(P)}
    for name, x_train, x_cat in inputs:
        m = E.fit_ridge(np.asarray(x_train, np.float64)[idx], mu[labels[idx]])
        P = m(x_cat)
        weight = photo_variance / m.loo_mse
        both = (one_photo + weight * P) / (1 + weight)
        out[name] = {"loo_mse": round(m.loo_mse, 2), "worth_photos": round(weight, 3),
                     "new_only": new_only(P), "general": general(P),
                     "1 photo + text": {"new_only": new_only(both), "general": general(both)}}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    print(json.dumps({m: probe(embed_everything(m, args.data)) for m in args.models}, indent=1))


if __name__ == "__main__":
    main()
