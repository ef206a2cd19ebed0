"""Issue 13's measurement: new SKUs recognised after enrolment, against retraining.

    nice -n 5 .venv/bin/python bench/enrollment_report.py --out /tmp/enrol \\
        --dataset synthetic=/tmp/synth-new --dataset iconshop=/tmp/iconshop300 \\
        --seeds 0 1 2 --photos 0 1 2 5

Each dataset folder holds train/test manifests, `catalogue.jsonl` and `new_skus.json` (made by
`sicot synth --new-skus N` or `build_iconshop.sh --new-skus N`): the new SKUs have no training
photos, and their test photos are in test.jsonl. Per seed:
  - `sicot train` of `sicot` and of `cosine` (the best visual-only baseline) on the trained
    classes, once (the same models serve settings a-c for every photo count);
  - for k in --photos, `sicot enroll --max-images-per-sku k` of the catalogue into
      (a) sicot with its listing text, (b) sicot with `--no-text`, (c) cosine (photos only);
    (b) and (c) need k >= 1;
  - (d) `sicot train` of `sicot` from scratch on the training set plus k catalogue photos of
    each new SKU (with its listing as their title and tags), for every k >= 1.
Every model is scored on image-only queries (`serving_default`) of the test split among all
its classes (the generalized setting): top-1 on the new SKUs' test photos, on the trained
classes' test photos (and before enrolment), and the share of trained-class photos answered
with a new SKU. Training runs are `sicot train` subprocesses (reused when finished with the
same options); enrolment and scoring run in this process. Writes OUT/results.json and
OUT/table.md (mean +- sample std over seeds).

`--set KEY=VALUE` changes every training (e.g. `--set backbone=efficientnet_lite0
--image-size 96`, the pretrained tower). A variant of `sicot` (e.g. the listing -> visual loss of `ModelConfig.listing_weight`) is
measured with `--sicot-set KEY=VALUE` (passed to `sicot train --set` of settings a, b and d)
into its own --out; `--settings` limits the settings (without c, `cosine` is not trained).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

SETTINGS = ("a_sicot_text", "b_sicot_photos", "c_cosine_photos", "d_retrained")


def sicot_command():
    return [os.path.join(os.path.dirname(sys.executable), "sicot")]


def train(data_dir, model, seed, out, work_dir, args):
    """`sicot train` into out (skipped when finished with the same command)."""
    command = sicot_command() + [
        "train", "--data", data_dir, "--model", model, "--out", out, "--epochs", str(args.epochs),
        "--image-size", str(args.image_size), "--seed", str(seed), "--work-dir", work_dir]
    command += [a for pair in args.set for a in ("--set", pair)]
    if model == "sicot":
        command += [a for pair in args.sicot_set for a in ("--set", pair)]
    log_path = out + ".train.log"
    done = os.path.join(out, "train_report.json")
    if os.path.isfile(done) and os.path.isfile(log_path):
        with open(log_path) as f:
            if f.readline().strip() == " ".join(command):
                return out
        raise SystemExit(f"{out}: trained with another command (see {log_path}); use another "
                         f"--out")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    if code:
        raise RuntimeError(f"sicot train exited {code}: see {log_path}")
    print(f"trained {out} in {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    return out


def retraining_dataset(data_dir, k, out_dir):
    """DATA + k catalogue photos per new SKU in train.jsonl (listing text as title/tags); the
    images are hard links (or copies) so the importer's path rule holds."""
    marker = os.path.join(out_dir, "train.jsonl")
    if os.path.isfile(marker):
        return out_dir
    os.makedirs(out_dir, exist_ok=True)
    for name in ("test.jsonl", "eval.jsonl", "new_skus.json", "classes.jsonl"):
        if os.path.isfile(os.path.join(data_dir, name)):
            shutil.copyfile(os.path.join(data_dir, name), os.path.join(out_dir, name))
    src_images = os.path.join(data_dir, "images")
    dst_images = os.path.join(out_dir, "images")
    if not os.path.isdir(dst_images):
        try:
            shutil.copytree(src_images, dst_images, copy_function=os.link)
        except OSError:
            shutil.rmtree(dst_images, ignore_errors=True)
            shutil.copytree(src_images, dst_images)
    extra = []
    with open(os.path.join(data_dir, "catalogue.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                sku = json.loads(line)
                for image in sku.get("images", [])[:k]:
                    extra.append({"image": image, "title": sku.get("title", ""),
                                  "tags": sku.get("tags", []), "label": sku["label"]})
    with open(os.path.join(data_dir, "train.jsonl"), encoding="utf-8") as f:
        lines = f.read().rstrip("\n").split("\n")
    lines += [json.dumps(r, ensure_ascii=False) for r in extra]
    with open(marker + ".partial", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(marker + ".partial", marker)
    return out_dir


class TestSplit:
    """The test split read once (through the importer's checks, as `sicot evaluate`)."""

    def __init__(self, data_dir):
        from sicot.trainer.evaluation.band_accuracy import read_split

        self.records, rejected = read_split(data_dir, "test")
        if rejected:
            raise SystemExit(f"{data_dir}: {len(rejected)} test records rejected")
        with open(os.path.join(data_dir, "new_skus.json")) as f:
            self.new_skus = set(json.load(f))
        from sicot import contract

        self.labels = [r[contract.LABEL_KEY].decode("utf-8") for r in self.records]
        self.is_new = [label in self.new_skus for label in self.labels]

    def score(self, saved_model_dir, batch=128) -> dict:
        import numpy as np
        import tensorflow as tf
        import tensorflow_text  # noqa: F401

        from sicot import contract

        fn = tf.saved_model.load(saved_model_dir).signatures[contract.IMAGE_SIGNATURE]
        top1 = []
        for start in range(0, len(self.records), batch):
            images = [r[contract.IMAGE_KEY] for r in self.records[start:start + batch]]
            classes = fn(**{contract.IMAGE_KEY: tf.constant(images)})[
                contract.CLASSES_OUTPUT].numpy()[:, 0]
            top1.extend(c.decode("utf-8") for c in classes)
        top1 = np.array(top1, object)
        labels = np.array(self.labels, object)
        new = np.array(self.is_new)
        hit = top1 == labels
        predicted_new = np.isin(top1.astype(str), list(self.new_skus))
        return {"new_top1": 100.0 * float(hit[new].mean()),
                "trained_top1": 100.0 * float(hit[~new].mean()),
                "trained_answered_new": 100.0 * float(predicted_new[~new].mean()),
                "new_answered_trained": 100.0 * float((~predicted_new[new]).mean()),
                "new_images": int(new.sum()), "trained_images": int((~new).sum())}


def latest_saved_model(folder):
    from sicot.trainer.evaluation.band_accuracy import resolve_saved_model_dir

    return resolve_saved_model_dir(folder)


def run_dataset(name, data_dir, args, results):
    from sicot.trainer.enrollment.catalogue import enroll_folder

    test = None if args.train_only else TestSplit(data_dir)
    work = os.path.join(args.out, "work", name)
    catalogue = os.path.join(data_dir, "catalogue.jsonl")
    for seed in args.seeds:
        base = {}
        models = ("sicot", "cosine") if "c_cosine_photos" in args.settings else ("sicot",)
        for model in models:
            base[model] = train(data_dir, model, seed, os.path.join(
                args.out, "runs", name, f"seed{seed}", model), work, args)
            key = (name, seed, "before", model, None)
            if key not in results and not args.train_only:
                results[key] = test.score(latest_saved_model(base[model]))
                save(args, results)
        for k in ([] if args.train_only else args.photos):
            settings = [("a_sicot_text", base["sicot"], True)]
            if k >= 1:
                settings.append(("b_sicot_photos", base["sicot"], False))
                if "cosine" in base:
                    settings.append(("c_cosine_photos", base["cosine"], False))
            for setting, model_dir, use_text in settings:
                key = (name, seed, setting, None, k)
                if key in results or setting not in args.settings:
                    continue
                out = os.path.join(args.out, "runs", name, f"seed{seed}", f"{setting}_k{k}")
                shutil.rmtree(out, ignore_errors=True)
                report = enroll_folder(model_dir, catalogue, out, max_images=k,
                                       use_text=use_text, log=lambda *_: None)
                scores = test.score(report["saved_model"])
                scores.update(enrol_seconds=report["enrol_seconds"],
                              export_seconds=report["export_seconds"],
                              text_weight=report["calibration"]["text_weight"])
                results[key] = scores
                print(f"{name} seed{seed} {setting} k={k}: new {scores['new_top1']:.1f} trained "
                      f"{scores['trained_top1']:.1f}", file=sys.stderr, flush=True)
                save(args, results)
                if not args.keep_models:
                    shutil.rmtree(os.path.join(out, "export"), ignore_errors=True)
        if args.skip_retrain or "d_retrained" not in args.settings:
            continue
        for k in [k for k in args.photos if k >= 1]:
            key = (name, seed, "d_retrained", None, k)
            if key in results:
                continue
            data_k = retraining_dataset(data_dir, k, os.path.join(args.out, "data",
                                                                   f"{name}_k{k}"))
            out = train(data_k, "sicot", seed, os.path.join(
                args.out, "runs", name, f"seed{seed}", f"d_retrained_k{k}"),
                os.path.join(args.out, "work", f"{name}_k{k}"), args)
            if not args.train_only:
                results[key] = test.score(latest_saved_model(out))
                save(args, results)


def save(args, results):
    rows = [{"dataset": d, "seed": s, "setting": st, "model": m, "photos": k, **v}
            for (d, s, st, m, k), v in sorted(results.items(), key=lambda kv: str(kv[0]))]
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"settings": {k: v for k, v in vars(args).items()}, "runs": rows}, f,
                  indent=2)


def load(args) -> dict:
    path = os.path.join(args.out, "results.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        rows = json.load(f)["runs"]
    return {(r["dataset"], r["seed"], r["setting"], r["model"], r["photos"]):
            {k: v for k, v in r.items()
             if k not in ("dataset", "seed", "setting", "model", "photos")} for r in rows}


def _stat(values):
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def table(results, datasets, photos) -> str:
    lines = []
    for d in datasets:
        lines.append(f"\n**{d}**: image-only top-1 (%) among all classes, mean +- std over "
                     f"seeds (n = seeds)\n")
        lines.append("| setting | photos | new SKUs | trained classes | trained answered as "
                     "new | n |")
        lines.append("|---|---|---|---|---|---|")
        for model in ("sicot", "cosine"):
            rows = [v for (dd, s, st, m, k), v in results.items()
                    if dd == d and st == "before" and m == model]
            if rows:
                lines.append(f"| {model} before enrolment | - | - | "
                             f"{_stat([r['trained_top1'] for r in rows])} | - | {len(rows)} |")
        for setting in SETTINGS:
            for k in photos:
                rows = [v for (dd, s, st, m, kk), v in results.items()
                        if dd == d and st == setting and kk == k]
                if not rows:
                    continue
                lines.append(f"| {setting} | {k} | {_stat([r['new_top1'] for r in rows])} | "
                             f"{_stat([r['trained_top1'] for r in rows])} | "
                             f"{_stat([r['trained_answered_new'] for r in rows])} | "
                             f"{len(rows)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--photos", nargs="+", type=int, default=[0, 1, 2, 5])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--skip-retrain", action="store_true", help="no setting (d)")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS),
                        help="the settings to run (default all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a ModelConfig change for every training, base models and "
                             "setting d (repeatable), e.g. backbone=efficientnet_lite0")
    parser.add_argument("--sicot-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a ModelConfig change for every `sicot` training (sicot train "
                             "--set; repeatable), e.g. listing_weight=1.0")
    parser.add_argument("--keep-models", action="store_true",
                        help="keep the enrolled SavedModels (default: only their reports)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--train-only", action="store_true",
                        help="only the training runs (base models and setting d)")
    args = parser.parse_args(argv)
    datasets = dict(d.split("=", 1) for d in args.dataset)
    os.makedirs(args.out, exist_ok=True)
    results = load(args)
    if not args.report_only:
        for name, data_dir in datasets.items():
            run_dataset(name, data_dir, args, results)
    text = table(results, list(datasets), args.photos)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
