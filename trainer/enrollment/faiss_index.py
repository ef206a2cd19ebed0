"""`sicot index`: an approximate nearest-neighbour index (FAISS) for visual search over a
catalogue too large for the SavedModel's exact search.

    sicot index --model runs/sicot-enrolled --out runs/index                 # the model's items
    sicot index --model runs/sicot --catalog big/catalogue.jsonl --out runs/index [--kind hnsw]

Items and vectors follow `sicot.data.search_index` (one item per catalogue photo, image
vectors unit(v)); the index answers image-only queries: `sicot predict --search --index DIR`
asks the server for the query photo's `embedding` and searches the index. OUT holds
index.faiss, items.npz (item ids, labels), index.json (kind, settings, build time, model).
"""
from __future__ import annotations

import os
import time

from sicot.errors import UserError


def register(subparsers) -> None:
    from sicot.data.search_index import INDEX_KINDS

    p = subparsers.add_parser(
        "index", help="build an approximate visual-search index (FAISS) of catalogue photos",
        description="Embed a catalogue's photos with a trained model (or take an enrolled "
                    "model's search items) and build a FAISS index for image-only search.")
    p.add_argument("--model", required=True,
                   help="`sicot train --out` or `sicot enroll --out` folder")
    p.add_argument("--catalog", help="catalogue JSONL to index (default: the model's own "
                   "search items, written by sicot enroll)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kind", choices=INDEX_KINDS, default="hnsw",
                   help="hnsw (default), ivf, or flat (exact)")
    p.add_argument("--m", type=int, default=32, help="HNSW links per node (default 32)")
    p.add_argument("--ef-construction", type=int, default=80, help="HNSW build effort")
    p.add_argument("--ef-search", type=int, default=64, help="HNSW query effort (default 64)")
    p.add_argument("--nlist", type=int, default=None, help="IVF cells (default 4 sqrt(N))")
    p.add_argument("--nprobe", type=int, default=32, help="IVF cells visited (default 32)")
    p.add_argument("--max-images-per-sku", type=int, default=None, metavar="K")
    p.set_defaults(handler=_index_command)


def catalogue_search_items(model_dir: str, catalogue_path: str, max_images=None, log=print):
    """(SearchItems of a catalogue embedded with the model, the catalogue)."""
    import keras
    import tensorflow_transform as tft

    from sicot.data.catalogue import read_catalogue
    from sicot.data.search_index import SearchItems
    from sicot.trainer.enrollment import catalogue as enroll, prototypes, enrolled_model
    from sicot.trainer.model import enrolled_sicot_model, sicot_model  # noqa: F401
    from sicot.trainer.transform import text_ops  # noqa: F401

    folder = enroll.read_model_folder(model_dir)
    catalogue = read_catalogue(catalogue_path, max_images=max_images)
    tto = tft.TFTransformOutput(folder.transform_output)
    base = enrolled_model.base_model(keras.saving.load_model(folder.keras_path))
    text_model = base.model_config.uses_text
    calibration = (enroll.load_or_fit_calibration(base, folder, tto, log=log)
                   if text_model and any(not s.images for s in catalogue.skus) else None)
    items = SearchItems.empty(base.model_config.embedding_dim, text_model)
    for sku, emb in zip(catalogue.skus, enroll.embed_catalogue(base, tto, catalogue.skus)):
        if sku.images:
            items = items.concat(enroll.sku_items(sku, emb))
        elif calibration is not None and emb.known_words:
            proto = prototypes.sku_prototypes(calibration, emb.visual, emb.semantic, emb.listing,
                                              listing_visual=emb.listing_visual)
            items = items.concat(enroll.sku_items(sku, emb, proto["visual"]))
        else:
            catalogue.quarantine.append({"source": sku.source, "label": sku.label,
                                         "reason": "no_evidence: no photos and no listing the "
                                                   "model can place"})
    return items, catalogue


def _index_command(args) -> int:
    from sicot.data.catalogue import QUARANTINE_FILE
    from sicot.data.search_index import ITEMS_FILE, AnnIndex, SearchItems

    start = time.perf_counter()
    if args.catalog:
        items, catalogue = catalogue_search_items(args.model, args.catalog,
                                                  args.max_images_per_sku)
        catalogue.write_quarantine(os.path.join(args.out, QUARANTINE_FILE))
    else:
        path = os.path.join(args.model, "run", ITEMS_FILE)
        if not os.path.isfile(path):
            raise UserError(f"--model {args.model}: no run/{ITEMS_FILE} (enrol a catalogue "
                            f"first, or pass --catalog)")
        items = SearchItems.load(path)
    if not len(items):
        raise UserError("nothing to index: the catalogue has no usable photos")
    embed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    index = AnnIndex.build(items.image, items.item_ids, items.labels, kind=args.kind, m=args.m,
                           ef_construction=args.ef_construction, ef_search=args.ef_search,
                           nlist=args.nlist, nprobe=args.nprobe)
    index.meta.update(model=os.path.abspath(args.model), build_seconds=time.perf_counter() - start,
                      embed_seconds=embed_seconds, vectors="image")
    index.save(args.out)
    print(f"sicot index: {len(index)} items, {args.kind}, built in "
          f"{index.meta['build_seconds']:.1f}s -> {args.out}")
    return 0

