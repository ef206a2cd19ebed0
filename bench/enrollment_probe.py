"""Enrolment variants on frozen embeddings (numpy), for the research behind `sicot.trainer.enrollment.prototypes`.

    .venv/bin/python bench/enrollment_probe.py --model RUN/sicot --data DATA [--cosine RUN/cosine]

Embeds, once, a trained model's training examples, the dataset's catalogue (photos, listing)
and its test split, caches them in MODEL/probe_cache.npz, then scores enrolment variants with
the model's own trained rows and numpy logits: image-only top-1 on the new SKUs' test photos
and on the trained classes' test photos among all classes (what `enrollment_report.py`
measures through the SavedModel, minus the export). The variants are design alternatives
logged in docs/experiments.md; `sicot.trainer.enrollment.prototypes` holds the chosen one ("default").
`--listing-alone` (text models): SKUs enrolled from their listing alone, per way of carrying
the listing into the visual space (`listing_maps`), beside the calibration's simulation of it.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def embed_everything(model_dir, data_dir):
    import keras
    import tensorflow_transform as tft

    from sicot.data.catalogue import read_catalogue
    from sicot.trainer.enrollment import catalogue as enroll, enrolled_model  # noqa: F401
    from sicot.trainer.model import enrolled_sicot_model, sicot_model
    from sicot.trainer.transform import text_ops
    from sicot.trainer.evaluation.band_accuracy import read_split

    cache = os.path.join(model_dir, "probe_cache.npz")
    if os.path.isfile(cache):
        with np.load(cache, allow_pickle=True) as data:
            return {k: data[k] for k in data.files}
    folder = enroll.read_model_folder(model_dir)
    tto = tft.TFTransformOutput(folder.transform_output)
    model = keras.saving.load_model(folder.keras_path)
    names = enroll.read_class_names(folder, tto)
    out = {}
    train = enrolled_model.embed_transformed_files(model, folder.train_files, tto)
    out.update({f"train_{k}": v for k, v in train.items()})
    catalogue = read_catalogue(os.path.join(data_dir, "catalogue.jsonl"))
    photos = [(i, img) for i, s in enumerate(catalogue.skus) for img in s.images]
    pixels, tokens = enrolled_model.transform_raw(
        tto, [p for _, p in photos], [catalogue.skus[i].title for i, _ in photos],
        [catalogue.skus[i].tags for i, _ in photos])
    emb = enrolled_model.embed(model, pixels, tokens if model.model_config.uses_text else None)
    out.update({f"cat_{k}": v for k, v in emb.items()})
    out["cat_sku"] = np.array([i for i, _ in photos])
    out["cat_labels"] = np.array([s.label for s in catalogue.skus])
    placeholder = enroll.placeholder_image()
    _, ltokens = enrolled_model.transform_raw(tto, [placeholder] * len(catalogue.skus),
                                              [s.title for s in catalogue.skus],
                                              [s.tags for s in catalogue.skus])
    out["cat_tokens"] = ltokens
    if model.model_config.uses_text:
        out["cat_listing"] = enrolled_model.embed_listings(model, ltokens)
        if model.has_listing_projection:  # R s0 (ModelConfig.listing_weight)
            out["cat_listing_visual"] = enrolled_model.listing_to_visual(model,
                                                                         out["cat_listing"])
    records, _ = read_split(data_dir, "test")
    pixels, _ = enrolled_model.transform_raw(tto, [r["image"] for r in records])
    out["test_visual"] = enrolled_model.embed(model, pixels)["visual"]
    out["test_labels"] = np.array([r["label"].decode() for r in records])
    out["class_names"] = np.array(names)
    heads = enrolled_model.head_rows(model)
    out["visual_rows"] = heads["visual"].rows
    out["visual_kind"] = np.array(heads["visual"].kind)
    out["visual_scale"] = np.array(heads["visual"].scale)
    if heads["visual"].bias is not None:
        out["visual_bias"] = heads["visual"].bias
    np.savez(cache, **out)
    return out


def head_of(e):
    from sicot.trainer.enrollment import prototypes as E

    kind = str(e["visual_kind"])
    return E.HeadRows(kind, e["visual_rows"], e.get("visual_bias"),
                      float(e.get("visual_scale", 1.0)))


def score(e, new_logits):
    """Top-1 on new / trained test photos among all classes, given the new classes' logits."""
    head = head_of(e)
    full = np.concatenate([head.logits(e["test_visual"]), new_logits], axis=1)
    names = np.concatenate([e["class_names"], e["cat_labels"]])
    pred = names[np.argmax(full, axis=1)]
    new = np.isin(e["test_labels"], e["cat_labels"])
    hit = pred == e["test_labels"]
    return {"new": round(100 * hit[new].mean(), 1), "trained": round(100 * hit[~new].mean(), 1),
            "trained_as_new": round(100 * np.isin(pred[~new], e["cat_labels"]).mean(), 1)}


def head_map_rows(e, cal_means, prototypes, variances):
    """Rejected variant 1: a ridge map from a class's mean embedding [mu, |mu|^2 - var] to
    its trained row (w_c, b_c), fitted on the trained classes, applied to the prototypes."""
    from sicot.trainer.enrollment import prototypes as E

    head = head_of(e)
    means, counts, photo_variance = cal_means

    def inputs(m, var):
        return np.concatenate([m, (np.sum(m ** 2, 1) - var)[:, None]], axis=1)

    targets = head.rows if head.bias is None else np.concatenate(
        [head.rows, head.bias[:, None]], 1)
    if head.kind == "cosine":
        targets = E.unit(head.rows)
    present = counts > 0
    m = E.fit_ridge(inputs(means[present], photo_variance / counts[present]), targets[present])
    out = m(inputs(prototypes, variances))
    if head.bias is None:
        return E.HeadRows("cosine", E.unit(out), None, head.scale).logits(e["test_visual"])
    return e["test_visual"] @ out[:, :-1].T + out[:, -1]


def run_variants(e, photos, budget, seed=0):
    from sicot.trainer.enrollment import prototypes as E

    C = len(e["class_names"])
    head = head_of(e)
    train = {"labels": e["train_labels"], "visual": e["train_visual"]}
    text = "train_listing" in e
    if text:
        train.update(listing=e["train_listing"], semantic=e["train_semantic"])
        if "train_listing_visual" in e:
            train["listing_visual"] = e["train_listing_visual"]
    cal = E.fit_calibration(train, {"visual": head}, C, seed=seed)
    means, counts = E.class_means(e["train_visual"], e["train_labels"], C)
    results = {"calibration": {k: v for k, v in cal.summary().items()},
               "before": score(e, np.zeros((len(e["test_visual"]), 0)))}
    for k in photos:
        for use_text in ([True, False] if text else [False]):
            if k == 0 and not use_text:
                continue
            protos = []
            for i in range(len(e["cat_labels"])):
                idx = np.flatnonzero(e["cat_sku"] == i)[:k]
                vis = e["cat_visual"][idx]
                listing = e["cat_listing"][i] if (text and use_text) else None
                listing_visual = (e["cat_listing_visual"][i]
                                  if listing is not None and "cat_listing_visual" in e else None)
                protos.append(E.sku_prototypes(cal, vis, vis, listing,
                                               use_text=use_text and text,
                                               listing_visual=listing_visual)["visual"])
            P = np.stack(protos)
            evidence = k + (cal.text_weight if use_text and text else 0.0)
            variances = np.full(len(P), cal.photo_variance / evidence if evidence else
                                cal.text_variance)
            name = f"k{k}_{'text' if use_text else 'photos'}"
            chosen = E.enrolled_scores(cal, "visual", P, budget)
            results[f"{name}_calibrated_cosine"] = score(e, chosen.logits(e["test_visual"]))
            mean_norm = np.mean(np.linalg.norm(head.rows, axis=1))
            imprint = E.HeadRows(head.kind, E.unit(P) * mean_norm,
                                 None if head.bias is None else np.full(len(P), head.bias.mean()),
                                 head.scale)
            results[f"{name}_imprint_uncalibrated"] = score(e, imprint.logits(e["test_visual"]))
            results[f"{name}_head_map"] = score(e, head_map_rows(
                e, (means, counts, cal.photo_variance), P, variances))
            # the text alone, among the new SKUs only (no trained class competes)
            if k == 0:
                new = np.isin(e["test_labels"], e["cat_labels"])
                nearest = e["cat_labels"][np.argmax(E.unit(e["test_visual"][new]) @ E.unit(P).T,
                                                    axis=1)]
                results[f"{name}_among_new_only"] = round(
                    100 * np.mean(nearest == e["test_labels"][new]), 1)
    return results


def listing_maps(e, cal, seed=0):
    """Ways to carry a listing's s0 into the visual space, each fitted on the trained classes:
    name -> function [N, D] s0 -> [N, D] visual prototypes. `ridge_examples` is enrolment's
    (`prototypes.fit_calibration`: each training title -> its class mean)."""
    from sicot.trainer.enrollment import prototypes as E

    C = len(e["class_names"])
    labels = e["train_labels"]
    text = e["train_listing_visual"] if "train_listing_visual" in e else e["train_listing"]
    means, counts = E.class_means(e["train_visual"], labels, C)
    text_means = E.class_means(text, labels, C)[0]
    present = counts > 0
    idx = E.balanced_subset(labels, seed=seed)
    unit_map = E.fit_ridge(text[idx], E.unit(means)[labels[idx]])
    class_map = E.fit_ridge(text_means[present], means[present])

    def soft_nearest(temperature):
        def apply(x):
            sim = E.unit(x) @ E.unit(text_means[present]).T / temperature
            w = np.exp(sim - sim.max(axis=1, keepdims=True))
            return (w / w.sum(axis=1, keepdims=True)) @ means[present]
        return apply

    return {"ridge_examples": cal.text_map, "ridge_unit_targets": unit_map,
            "ridge_class_means": class_map, "soft_nearest_t0.05": soft_nearest(0.05),
            "soft_nearest_t0.2": soft_nearest(0.2)}


def listing_alone(e, budget, seed=0):
    """SKUs enrolled from the listing alone, per listing map: image-only top-1 of the new SKUs'
    test photos among all classes under both scoring rules, among the new SKUs only, and the
    calibration's simulation of it (`prototypes.ListingAlone`, the trained classes' test
    photos as the held-out split) for the map enrolment uses."""
    from sicot.trainer.enrollment import prototypes as E

    C = len(e["class_names"])
    head = head_of(e)
    train = {"labels": e["train_labels"], "visual": e["train_visual"],
             "listing": e["train_listing"], "semantic": e["train_semantic"]}
    if "train_listing_visual" in e:
        train["listing_visual"] = e["train_listing_visual"]
    index = {n: i for i, n in enumerate(e["class_names"])}
    trained_test = np.array([n in index for n in e["test_labels"]])
    held_out = {"labels": np.array([index[n] for n in e["test_labels"][trained_test]]),
                "visual": e["test_visual"][trained_test]}
    cal = E.fit_calibration(train, {"visual": head}, C, seed=seed, held_out=held_out)
    listings = (e["cat_listing_visual"] if "cat_listing_visual" in e else e["cat_listing"])
    new = np.isin(e["test_labels"], e["cat_labels"])
    means = cal.heads["visual"].class_means
    results = {"simulated_ridge_examples": cal.heads["visual"].listing_only,
               "chance_all_classes": round(100 / (C + len(e["cat_labels"])), 2)}
    for name, fn in listing_maps(e, cal, seed).items():
        P = E.unit(fn(np.asarray(listings, np.float64)))
        budget_scores = E.enrolled_scores(cal, "visual", P, budget, "budget")
        z = E.unit(e["test_visual"])
        same = np.concatenate([z @ means.T, z @ P.T], axis=1)  # both on a * cos, b = 0
        names = np.concatenate([e["class_names"], e["cat_labels"]])
        nearest = e["cat_labels"][np.argmax(z[new] @ P.T, axis=1)]
        results[name] = {
            "budget": score(e, budget_scores.logits(e["test_visual"])),
            "same_footing_new": round(100 * np.mean(
                names[np.argmax(same[new], axis=1)] == e["test_labels"][new]), 1),
            "among_new_only": round(100 * np.mean(nearest == e["test_labels"][new]), 1)}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, action="append")
    parser.add_argument("--data", required=True)
    parser.add_argument("--photos", nargs="+", type=int, default=[0, 1, 2, 5])
    parser.add_argument("--trained-budget", type=float, default=0.01)
    parser.add_argument("--listing-alone", action="store_true",
                        help="only the listing-alone study (`listing_alone`), text models")
    args = parser.parse_args(argv)
    out = {}
    for model_dir in args.model:
        e = embed_everything(model_dir, args.data)
        out[model_dir] = (listing_alone(e, args.trained_budget) if args.listing_alone
                          else run_variants(e, args.photos, args.trained_budget))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
