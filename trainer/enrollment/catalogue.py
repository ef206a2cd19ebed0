"""`sicot enroll`: add catalogue SKUs to a trained model, no gradient step.

    sicot enroll --model runs/sicot --catalog new/catalogue.jsonl --out runs/sicot-enrolled \\
        [--max-images-per-sku K] [--no-text] [--scoring auto|same-footing|budget]
        [--trained-budget SHARE] [--max-trained-drop SHARE]

MODEL is a `sicot train --out` folder or an earlier `sicot enroll --out` folder. OUT is laid
out like a `sicot train --out` folder, so `sicot evaluate --model OUT` and `sicot serve
--model-base-path OUT/export` work on it unchanged:
    OUT/export/<version>/               SavedModel: the trained + enrolled classes, and the
                                        search signatures over the catalogue's items
    OUT/run/model.keras                 the enrolled Keras model (towers copied bit for bit)
    OUT/run/class_names.json            class names in class-id order (trained, then enrolled)
    OUT/run/search_items.npz            the search items (`sicot.data.search_index`)
    OUT/run/enrollment_calibration.npz  what enrolment fitted on the trained classes
    OUT/run/enrolment.json              every enrolled SKU: label, source line, photos, words;
                                        the enrolment check ("check") and its "warnings"
    OUT/train_report.json               the base model's report + what was enrolled
    OUT/catalogue_quarantine.jsonl      catalogue lines or photos that could not be used
How a class is built from photos and listing text: `sicot.trainer.enrollment.prototypes`.
Every enrolment measures how often the enrolled SKUs would be named and what the trained classes
would lose (`enrolment_check`), prints it, chooses `--scoring auto`'s rule on it, and warns when
enrolled SKUs would almost never be answered.
The pipeline's Enroller (`sicot run --catalog`, `sicot.pipeline.enroller`) runs the same
`enroll_model` on the Trainer's artifacts (`enroll_for_pipeline`).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import time

import numpy as np

from sicot import contract
from sicot.errors import UserError
from sicot.trainer.enrollment import enrolment_check, prototypes
from sicot.trainer.export.folders import new_version_dir

CLASS_NAMES_FILE = "class_names.json"
CALIBRATION_FILE = prototypes.CALIBRATION_FILE
ENROLMENT_FILE = "enrolment.json"
TRAIN_REPORT = "train_report.json"
TRANSFORM_STAMP = "transform_stamp.json"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "enroll", help="add catalogue SKUs (listing text + 0..n photos) to a trained model",
        description="Enrol new or updated SKUs from a catalogue JSONL file into a trained model "
                    "without a gradient step, and index their photos for visual search. The "
                    "output folder is laid out like `sicot train --out`.")
    p.add_argument("--model", required=True,
                   help="`sicot train --out` folder (or an earlier `sicot enroll --out`)")
    p.add_argument("--catalog", required=True,
                   help="catalogue JSONL: {label, title, tags, images} per line")
    p.add_argument("--out", required=True, help="output folder (like `sicot train --out`)")
    add_enroll_options(p)
    p.set_defaults(handler=_enroll_command)


def add_enroll_options(parser) -> None:
    """The enrolment options, shared by `sicot enroll` and `sicot run/compile --catalog`."""
    parser.add_argument("--max-images-per-sku", type=int, default=None, metavar="K",
                        help="enrol at most K photos per SKU (the first K good ones)")
    parser.add_argument("--no-text", action="store_true",
                        help="ignore the listing text (photos only, as a visual-only model)")
    parser.add_argument("--trained-budget", type=float,
                        default=prototypes.DEFAULT_TRAINED_BUDGET, metavar="SHARE",
                        help="at most this share of the trained classes' own training photos "
                             "may be answered with an enrolled class; sets the enrolled "
                             f"classes' offset (default {prototypes.DEFAULT_TRAINED_BUDGET})")
    parser.add_argument("--scoring", choices=prototypes.SCORINGS, default="auto",
                        help="how enrolled classes meet the trained ones: same-footing = every "
                             "class by cosine to its class mean or prototype; budget = the "
                             "trained head's logits, enrolled classes offset by "
                             "--trained-budget; auto (default) = per head, the rule whose "
                             "enrolled SKUs are named most often (leave-one-out over SKUs with "
                             "2+ photos) among those that cost the trained classes at most "
                             "--max-trained-drop of held-out top-1")
    parser.add_argument("--max-trained-drop", type=float,
                        default=enrolment_check.DEFAULT_MAX_TRAINED_DROP, metavar="SHARE",
                        help="--scoring auto: the trained classes' held-out top-1 may drop at "
                             "most this much (absolute, default "
                             f"{enrolment_check.DEFAULT_MAX_TRAINED_DROP} = 1 point)")


def enroll_settings(max_images_per_sku: int | None = None, use_text: bool = True,
                    trained_budget: float = prototypes.DEFAULT_TRAINED_BUDGET,
                    scoring: str = "auto",
                    max_trained_drop: float = enrolment_check.DEFAULT_MAX_TRAINED_DROP) -> dict:
    """The enrolment settings checked (keyword arguments of `enroll_model` by these names,
    as the pipeline's Enroller gets them); UserError names a bad one."""
    if max_images_per_sku is not None and (isinstance(max_images_per_sku, bool)
                                           or not isinstance(max_images_per_sku, int)
                                           or max_images_per_sku < 0):
        raise UserError(f"--max-images-per-sku {max_images_per_sku}: must be >= 0")
    if not 0.0 <= trained_budget < 1.0:
        raise UserError(f"--trained-budget {trained_budget}: must be in [0, 1)")
    if scoring not in prototypes.SCORINGS:
        raise UserError(f"--scoring {scoring}: must be one of {', '.join(prototypes.SCORINGS)}")
    if not 0.0 <= max_trained_drop <= 1.0:
        raise UserError(f"--max-trained-drop {max_trained_drop}: must be in [0, 1]")
    return {"max_images_per_sku": max_images_per_sku, "use_text": bool(use_text),
            "trained_budget": float(trained_budget), "scoring": scoring,
            "max_trained_drop": float(max_trained_drop)}


def enroll_settings_from_args(args) -> dict:
    return enroll_settings(args.max_images_per_sku, not args.no_text, args.trained_budget,
                           args.scoring, args.max_trained_drop)


# ---------------------------------------------------------------------------------------------
# The model folder


@dataclasses.dataclass
class ModelFolder:
    path: str
    run_dir: str
    report: dict
    transform_output: str
    train_files: list
    eval_files: list  # held-out examples of the trained classes (may be empty)

    @property
    def keras_path(self):
        from sicot.trainer.export.folders import KERAS_MODEL_FILE

        return os.path.join(self.run_dir, KERAS_MODEL_FILE)


def read_model_folder(path: str) -> ModelFolder:
    """The parts of a `sicot train` / `sicot enroll` output folder that enrolment needs."""
    from sicot.trainer.export.folders import KERAS_MODEL_FILE

    run_dir = os.path.join(path, "run")
    if not os.path.isfile(os.path.join(run_dir, KERAS_MODEL_FILE)):
        raise UserError(f"--model {path}: no run/{KERAS_MODEL_FILE} (expected a `sicot train "
                        f"--out` or `sicot enroll --out` folder)")
    report = {}
    if os.path.isfile(os.path.join(path, TRAIN_REPORT)):
        with open(os.path.join(path, TRAIN_REPORT)) as f:
            report = json.load(f)
    transform_output = report.get("transform_output")
    files = report.get("transformed_files", {})
    if not transform_output:  # a folder trained before the report named its Transform output
        stamp = os.path.join(path, "work", TRANSFORM_STAMP)
        if os.path.isfile(stamp):
            with open(stamp) as f:
                result = json.load(f)["result"]
            transform_output = result["transform_output_dir"]
            files = result["transformed_files"]
    train_files, eval_files = files.get("train"), files.get("eval")
    if not transform_output or not os.path.isdir(transform_output):
        raise UserError(f"--model {path}: cannot find its Transform output (train_report.json "
                        f"names none, or it was deleted: {transform_output})")

    def as_list(pattern):
        return [pattern] if isinstance(pattern, str) else list(pattern or [])

    return ModelFolder(path, run_dir, report, transform_output, as_list(train_files),
                       as_list(eval_files))


def read_class_names(folder: ModelFolder, tf_transform_output) -> list:
    path = os.path.join(folder.run_dir, CLASS_NAMES_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return [c.decode("utf-8") if isinstance(c, bytes) else c
            for c in tf_transform_output.vocabulary_by_name(contract.LABEL_VOCAB_NAME)]


def load_or_fit_calibration(model, folder: ModelFolder, tf_transform_output, log=print):
    """The base model's calibration (fitted once on its training examples and kept in its
    run folder by `sicot train`, or by an earlier enrolment), else fitted now."""
    from sicot.trainer.enrollment import enrolled_model

    path = os.path.join(folder.run_dir, CALIBRATION_FILE)
    text_input = ("listing_visual" if enrolled_model.base_model(model).has_listing_projection
                  else "listing")
    if os.path.isfile(path):
        calibration = prototypes.load_calibration(path)
        # None: written by an older version of enrolment; a text map that reads another
        # listing feature than this model gives is refitted too
        if calibration is not None and (calibration.text_map is None
                                        or calibration.text_input == text_input):
            return calibration
    if not folder.train_files:
        raise UserError(f"--model {folder.path}: no {CALIBRATION_FILE} and no training "
                        f"examples to fit one on")
    start = time.perf_counter()
    calibration = enrolled_model.fit_model_calibration(model, folder.train_files,
                                                       tf_transform_output,
                                                       eval_files=folder.eval_files or None)
    log(f"sicot enroll: fitted the calibration on the trained classes in "
        f"{time.perf_counter() - start:.1f}s")
    return calibration


# ---------------------------------------------------------------------------------------------
# Enrolment


def placeholder_image() -> bytes:
    """A small valid PNG: the Transform graph needs an image to tokenise a photo-less listing
    (only the tokens of that pass are used)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclasses.dataclass
class EnrolResult:
    model: object            # EnrolledSICoTModel
    class_names: list
    items: object            # SearchItems
    report: dict
    quarantine: list


def _enrolled_prototypes(model) -> dict:
    """head name -> [N, D] prototypes of the classes a model already has enrolled."""
    from sicot.trainer.enrollment import enrolled_model
    from sicot.trainer.model.enrolled_sicot_model import EnrolledSICoTModel

    if not isinstance(model, EnrolledSICoTModel):
        return {}
    return {name: np.asarray(model.enrolled_head(name).prototypes.numpy(), np.float64)
            for name in enrolled_model.model_heads(model)}


@dataclasses.dataclass
class SkuEmbedding:
    visual: np.ndarray          # [k, D] its photos' visual embeddings
    semantic: np.ndarray        # [k, D] its listing queried by each photo (text models)
    listing: np.ndarray | None  # [D] its listing queried by nothing (s0), text models only
    known_words: int            # listing tokens in the model's vocabulary
    listing_visual: np.ndarray | None = None  # [D] R s0 (a learned listing projection)


def embed_catalogue(base, tf_transform_output, skus) -> list:
    """One SkuEmbedding per SKU: one Transform + embedding pass over every photo (with its
    SKU's listing as text) and one over the listings alone."""
    from sicot.trainer.enrollment import enrolled_model

    text_model = base.model_config.uses_text
    dim = base.model_config.embedding_dim
    photo_rows = [(i, img) for i, s in enumerate(skus) for img in s.images]
    images, tokens = enrolled_model.transform_raw(
        tf_transform_output, [img for _, img in photo_rows],
        [skus[i].title for i, _ in photo_rows], [skus[i].tags for i, _ in photo_rows])
    photo_emb = (enrolled_model.embed(base, images, tokens if text_model else None)
                 if images is not None else {})
    _, listing_tokens = enrolled_model.transform_raw(
        tf_transform_output, [placeholder_image()] * len(skus), [s.title for s in skus],
        [s.tags for s in skus])
    listing_emb = (enrolled_model.embed_listings(base, listing_tokens)
                   if text_model and listing_tokens is not None else None)
    listing_visual = (enrolled_model.listing_to_visual(base, listing_emb)
                      if listing_emb is not None else None)
    sku_of_photo = np.array([i for i, _ in photo_rows], np.int64)
    out = []
    for i in range(len(skus)):
        mask = sku_of_photo == i
        visual = photo_emb["visual"][mask] if mask.any() else np.zeros((0, dim))
        semantic = (photo_emb["semantic"][mask] if mask.any() and text_model
                    else np.zeros((0, dim)))
        out.append(SkuEmbedding(
            visual, semantic, listing_emb[i] if listing_emb is not None else None,
            int(np.sum(listing_tokens[i] >= contract.FIRST_VOCAB_TOKEN_ID)),
            listing_visual[i] if listing_visual is not None else None))
    return out


def sku_items(sku, emb: SkuEmbedding, prototype_visual=None):
    """The search items of one SKU: its photos, or (photo-less, text model) its listing, placed
    at its text-estimated prototype (`sicot.data.search_index` has the vector rule)."""
    from sicot.data.search_index import LISTING_ITEM, SearchItems, item_vectors

    if sku.images:
        ids = np.array(sku.item_ids, object)
        image, image_text = item_vectors(emb.visual,
                                         emb.semantic if emb.listing is not None else None)
    else:
        ids = np.array([f"{sku.label}/{LISTING_ITEM}"], object)
        image, image_text = item_vectors(np.asarray(prototype_visual)[None], emb.listing[None])
    return SearchItems(ids, np.array([sku.label] * len(ids), object), image, image_text)


def enroll_skus(model, calibration, tf_transform_output, class_names, skus, *,
                use_text: bool = True, items=None,
                trained_budget: float = prototypes.DEFAULT_TRAINED_BUDGET,
                scoring: str = "auto",
                max_trained_drop: float = enrolment_check.DEFAULT_MAX_TRAINED_DROP
                ) -> EnrolResult:
    """The enrolled model for catalogue SKUs (`sicot.data.catalogue.CatalogueSku`).

    `model` is a trained SICoTModel or an earlier EnrolledSICoTModel, `class_names` its class
    names in id order. A SKU whose label is a trained class changes no classifier (the trained
    row has far more evidence than a catalogue entry): its photos become search items. A SKU
    whose label was enrolled before gets a new prototype; any other is a new class.
    Raises UserError when a SKU has no photos and the model (or `use_text=False`) cannot read
    text. A SKU with no photos whose listing has no word of the model's vocabulary cannot be
    placed anywhere: it goes to the returned quarantine with reason `no_evidence`.
    The report's "check" holds the enrolment check (`enrolment_check`) that chose each head's
    scoring rule, and "warnings" what it found wrong.
    """
    from sicot.data.search_index import SearchItems
    from sicot.trainer.enrollment import enrolled_model

    base = enrolled_model.base_model(model)
    text_model = base.model_config.uses_text
    use_text = use_text and text_model
    photo_less = [s for s in skus if not s.images]
    if photo_less and not use_text:
        why = ("has no text branch (a visual-only model)" if not text_model
               else "was asked to ignore the text (--no-text)")
        names = ", ".join(f"{s.source} ({s.label!r}" + (
            f", its {s.rejected_images} photo(s) quarantined" if s.rejected_images else "")
            + ")" for s in photo_less[:5])
        raise UserError(f"--catalog: the model {why}, so it cannot enrol a SKU without "
                        f"photos: {names}" + (f" and {len(photo_less) - 5} more"
                                              if len(photo_less) > 5 else "")
                        + "; add photos to them or leave them out")
    dim = base.model_config.embedding_dim
    embedded = embed_catalogue(base, tf_transform_output, skus)
    heads = enrolled_model.model_heads(base)
    trained = set(class_names[:base.num_classes])
    enrolled_names = list(class_names[base.num_classes:])
    rows = {h: list(p) for h, p in _enrolled_prototypes(model).items()} or {
        h: [] for h in heads}
    quarantine, entries, checked = [], [], []
    new_items = SearchItems.empty(dim, text_model)
    for sku, emb in zip(skus, embedded):
        visual, semantic, listing, known_words = (emb.visual, emb.semantic, emb.listing,
                                                  emb.known_words)
        if not sku.images and known_words == 0:
            quarantine.append({"source": sku.source, "label": sku.label,
                               "reason": "no_evidence: no photos, and no word of the listing "
                                         "is in the model's vocabulary"})
            continue
        text_used = bool(use_text and known_words > 0)
        proto = prototypes.sku_prototypes(calibration, visual, semantic, listing,
                                          use_text=text_used,
                                          listing_visual=emb.listing_visual)
        entry = {"label": sku.label, "source": sku.source, "photos": len(sku.images),
                 "listing_words_known": known_words, "text_used": text_used}
        slot = None
        if sku.label in trained:
            entry["class"] = "trained: search items only"
        elif sku.label in enrolled_names:
            slot = enrolled_names.index(sku.label)
            for h in heads:
                rows[h][slot] = proto[h]
            entry["class"] = "enrolled: prototype replaced"
        else:
            slot = len(enrolled_names)
            enrolled_names.append(sku.label)
            for h in heads:
                rows[h].append(proto[h])
            entry["class"] = "new"
        if slot is not None:
            checked.append(enrolment_check.EnrolledSku(slot, visual, semantic, listing,
                                                       emb.listing_visual, text_used))
        entries.append(entry)
        new_items = new_items.concat(sku_items(sku, emb, proto["visual"]))

    width = {"visual": dim, "semantic": dim, "fused": 2 * dim}
    rows = {h: np.asarray(rows[h], np.float64).reshape(-1, width[h]) for h in heads}
    scores, check = enrolment_check.check_enrolment(
        calibration, enrolled_model.head_rows(base), rows, checked, trained_budget, scoring,
        max_trained_drop)
    warnings = enrolment_check.warnings(check, base.num_classes + len(enrolled_names))
    from sicot.trainer.transform.output import model_shapes

    new_model = enrolled_model.build_enrolled(base, scores,
                                              model_shapes(tf_transform_output)[0])
    labels_now = {e["label"] for e in entries}
    all_items = (items.without_labels(labels_now) if items is not None
                 else SearchItems.empty(dim, text_model)).concat(new_items)
    counts = {kind: sum(1 for e in entries if e["class"].startswith(kind))
              for kind in ("new", "enrolled", "trained")}
    report = {"skus": len(entries), "new_classes": counts["new"],
              "updated_classes": counts["enrolled"], "trained_labels": counts["trained"],
              "enrolled_classes": len(enrolled_names), "items": len(all_items),
              "use_text": use_text, "trained_budget": trained_budget, "scoring": scoring,
              "same_footing": {h: s.trained_prototypes is not None for h, s in scores.items()},
              "offsets": {h: s.offset for h, s in scores.items()},
              "max_trained_drop": max_trained_drop, "check": check, "warnings": warnings,
              "calibration": calibration.summary(), "entries": entries,
              "enrolled_labels": enrolled_names}
    return EnrolResult(new_model, list(class_names[:base.num_classes]) + enrolled_names,
                       all_items, report, quarantine)


def _warn(message: str) -> None:
    from sicot import console

    print(f"WARNING: {message}", file=console.stream())


def enroll_model(folder: ModelFolder, catalogue_path: str, *, serving_dir: str, run_dir: str,
                 quarantine_path: str, max_images: int | None = None, use_text: bool = True,
                 trained_budget: float = prototypes.DEFAULT_TRAINED_BUDGET,
                 scoring: str = "auto",
                 max_trained_drop: float = enrolment_check.DEFAULT_MAX_TRAINED_DROP,
                 log=print, warn=_warn, log_name: str = "sicot enroll") -> dict:
    """Enrols a catalogue into the model of `folder` and writes the result: the SavedModel
    (trained + enrolled classes, search signatures) to `serving_dir`, the run files
    (model.keras, class names, search items, calibration, enrolment.json) to `run_dir`, the
    quarantined catalogue lines to `quarantine_path`. Local paths. Returns the enrolment
    report. Shared by `sicot enroll` (`enroll_folder`) and the pipeline's Enroller
    (`enroll_for_pipeline`). The enrolment check goes to `log`, each of its warnings to `warn`
    (default: "WARNING: ..." on the terminal)."""
    import keras
    import tensorflow_transform as tft

    from sicot.data.catalogue import read_catalogue
    from sicot.trainer.export.saved_model import export_serving_model
    from sicot.data.search_index import ITEMS_FILE, SearchItems
    from sicot.trainer.model import enrolled_sicot_model, sicot_model  # noqa: F401 (Keras classes)
    from sicot.trainer.transform import text_ops  # noqa: F401 (TF text ops of the Transform graph)
    from sicot.trainer.export.folders import KERAS_MODEL_FILE

    wall = time.perf_counter()
    catalogue = read_catalogue(catalogue_path, max_images=max_images)
    tf_transform_output = tft.TFTransformOutput(folder.transform_output)
    model = keras.saving.load_model(folder.keras_path)
    class_names = read_class_names(folder, tf_transform_output)
    calibration = load_or_fit_calibration(model, folder, tf_transform_output, log=log)
    items_path = os.path.join(folder.run_dir, ITEMS_FILE)
    items = SearchItems.load(items_path) if os.path.isfile(items_path) else None
    start = time.perf_counter()
    result = enroll_skus(model, calibration, tf_transform_output, class_names, catalogue.skus,
                         use_text=use_text, items=items, trained_budget=trained_budget,
                         scoring=scoring, max_trained_drop=max_trained_drop)
    enrol_seconds = time.perf_counter() - start
    os.makedirs(run_dir, exist_ok=True)
    catalogue.quarantine.extend(result.quarantine)
    catalogue.write_quarantine(quarantine_path)
    start = time.perf_counter()
    export_serving_model(result.model, tf_transform_output, serving_dir,
                         class_names=result.class_names, search_items=result.items)
    export_seconds = time.perf_counter() - start
    result.model.save(os.path.join(run_dir, KERAS_MODEL_FILE))
    with open(os.path.join(run_dir, CLASS_NAMES_FILE), "w", encoding="utf-8") as f:
        json.dump(result.class_names, f, ensure_ascii=False)
    result.items.save(os.path.join(run_dir, ITEMS_FILE))
    base_calibration = os.path.join(folder.run_dir, CALIBRATION_FILE)
    if os.path.isfile(base_calibration):
        shutil.copyfile(base_calibration, os.path.join(run_dir, CALIBRATION_FILE))
    else:
        prototypes.save_calibration(calibration, os.path.join(run_dir, CALIBRATION_FILE))
    report = dict(result.report, catalogue=catalogue.summary(), base_model=folder.path,
                  enrol_seconds=enrol_seconds, export_seconds=export_seconds,
                  total_seconds=time.perf_counter() - wall, saved_model=serving_dir,
                  num_classes=len(result.class_names), quarantine=quarantine_path)
    with open(os.path.join(run_dir, ENROLMENT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    summary = catalogue.summary()
    log(f"{log_name}: {summary['lines']} catalogue lines -> {report['new_classes']} new and "
        f"{report['updated_classes']} updated enrolled classes, {report['trained_labels']} "
        f"trained labels ({len(result.class_names)} classes in all), "
        f"{report['items']} search items; {len(catalogue.quarantine)} quarantined"
        + (f" (see {quarantine_path})" if catalogue.quarantine else "")
        + f"; enrolment {enrol_seconds:.1f}s, export {export_seconds:.1f}s; "
          f"SavedModel {serving_dir}")
    if report["check"]["heads"]:
        log("\n".join(f"{log_name}: {line}" if i == 0 else line for i, line in
                      enumerate(enrolment_check.describe(report["check"]))))
    for message in report["warnings"]:
        warn(f"{log_name}: {message}")
    return report


def enroll_folder(model_dir: str, catalogue_path: str, out_dir: str,
                  max_images: int | None = None, use_text: bool = True,
                  trained_budget: float = prototypes.DEFAULT_TRAINED_BUDGET,
                  scoring: str = "auto",
                  max_trained_drop: float = enrolment_check.DEFAULT_MAX_TRAINED_DROP,
                  log=print, warn=_warn) -> dict:
    """`sicot enroll` without the argument parsing; returns the enrolment report."""
    from sicot.data.catalogue import QUARANTINE_FILE

    folder = read_model_folder(model_dir)
    folder.path = os.path.abspath(model_dir)
    out_dir = os.path.abspath(out_dir)
    if folder.path == out_dir:
        raise UserError(f"--out {out_dir} must not be the --model folder")
    serving_dir = new_version_dir(os.path.join(out_dir, "export"))
    report = enroll_model(folder, catalogue_path, serving_dir=serving_dir,
                          run_dir=os.path.join(out_dir, "run"),
                          quarantine_path=os.path.join(out_dir, QUARANTINE_FILE),
                          max_images=max_images, use_text=use_text,
                          trained_budget=trained_budget, scoring=scoring,
                          max_trained_drop=max_trained_drop, log=log, warn=warn)
    train_report = dict(folder.report, transform_output=folder.transform_output,
                        transformed_files={"train": folder.train_files,
                                           "eval": folder.eval_files},
                        saved_model=serving_dir,
                        enrolled_from=folder.path,
                        enrolment={k: report[k] for k in ("skus", "new_classes",
                                                          "updated_classes", "enrolled_classes",
                                                          "items", "warnings")})
    with open(os.path.join(out_dir, TRAIN_REPORT), "w", encoding="utf-8") as f:
        json.dump(train_report, f, indent=2, ensure_ascii=False)
    return report


def _copy_tree(source: str, destination: str) -> None:
    """Copies a folder (local or a URL, any tf.io.gfile scheme) file by file."""
    import tensorflow as tf

    for folder, _, files in tf.io.gfile.walk(source):
        relative = os.path.relpath(folder, source) if folder != source else ""
        target = os.path.join(destination, relative) if relative else destination
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(folder, name), os.path.join(target, name),
                             overwrite=True)


def enroll_for_pipeline(trained_model: str, trained_model_run: str, transform_graph: str,
                        transformed_examples: str, catalogue_path: str, model: str,
                        model_run: str, quarantine: str, settings: dict | None = None,
                        log=print, warn=_warn) -> dict:
    """The pipeline's Enroller (`sicot.pipeline.enroller`, which calls this by dotted name):
    `enroll_model` from the Trainer's artifacts (URIs) into artifacts laid out like the
    Trainer's, so that the Evaluator, the Canary and the Pusher take the enrolled model as
    they take a trained one:
        <model>/Format-Serving/       the enrolled SavedModel
        <model>/warm_start/           the trained model's warm-start files, copied: a later
                                      `--warm-start` run starts from the trained classes and
                                      the Enroller enrols the catalogue again
        <model_run>/                  the run files of `sicot enroll --out`'s run/ folder
        <quarantine>/catalogue_quarantine.jsonl
    `settings`: `enroll_settings` fields. URIs may be remote (gs://...): enrolment reads and
    writes local files, so the base run files are staged in and the outputs copied out.
    Returns the enrolment report."""
    import tempfile

    import tensorflow as tf

    from sicot.data.catalogue import QUARANTINE_FILE
    from sicot.data.search_index import ITEMS_FILE
    from sicot.paths import is_remote
    from sicot.trainer.export.folders import KERAS_MODEL_FILE

    settings = enroll_settings(**dict(settings or {}))
    with tempfile.TemporaryDirectory(prefix="sicot_enroller_") as tmp:
        run_dir = trained_model_run
        if is_remote(trained_model_run):
            run_dir = os.path.join(tmp, "trained_run")
            os.makedirs(run_dir)
            for name in (KERAS_MODEL_FILE, CALIBRATION_FILE, CLASS_NAMES_FILE, ITEMS_FILE):
                if tf.io.gfile.exists(os.path.join(trained_model_run, name)):
                    tf.io.gfile.copy(os.path.join(trained_model_run, name),
                                     os.path.join(run_dir, name))
        # The examples fit a calibration only when the trained model has none saved.
        eval_split = os.path.join(transformed_examples, "Split-eval")
        folder = ModelFolder(trained_model, run_dir, {}, transform_graph,
                             [os.path.join(transformed_examples, "Split-train", "*")],
                             [os.path.join(eval_split, "*")] if tf.io.gfile.isdir(eval_split)
                             else [])
        if not os.path.isfile(folder.keras_path):
            raise ValueError(f"the Trainer's model run {trained_model_run} has no "
                             f"{KERAS_MODEL_FILE}")
        outputs = {uri: (os.path.join(tmp, name) if is_remote(uri) else uri)
                   for name, uri in (("model", model), ("model_run", model_run),
                                     ("quarantine", quarantine))}
        report = enroll_model(
            folder, catalogue_path,
            serving_dir=os.path.join(outputs[model], contract.SERVING_MODEL_DIR),
            run_dir=outputs[model_run],
            quarantine_path=os.path.join(outputs[quarantine], QUARANTINE_FILE),
            max_images=settings["max_images_per_sku"], use_text=settings["use_text"],
            trained_budget=settings["trained_budget"], scoring=settings["scoring"],
            max_trained_drop=settings["max_trained_drop"], log=log, warn=warn,
            log_name="Enroller")
        warm_start = os.path.join(trained_model, contract.WARM_START_DIR)
        if tf.io.gfile.isdir(warm_start):
            _copy_tree(warm_start, os.path.join(outputs[model], contract.WARM_START_DIR))
        for uri, local in outputs.items():
            if local != uri:
                _copy_tree(local, uri)
    report.update(saved_model=os.path.join(model, contract.SERVING_MODEL_DIR),
                  quarantine=os.path.join(quarantine, QUARANTINE_FILE))
    return report


def _enroll_command(args) -> int:
    settings = enroll_settings_from_args(args)
    enroll_folder(args.model, args.catalog, args.out, max_images=settings["max_images_per_sku"],
                  use_text=settings["use_text"], trained_budget=settings["trained_budget"],
                  scoring=settings["scoring"], max_trained_drop=settings["max_trained_drop"])
    return 0
