"""`sicot synth` and `sicot import`."""
from __future__ import annotations

def register(subparsers) -> None:
    from sicot.data.importer import ImportConfig
    from sicot.data.synth import SynthConfig

    d = SynthConfig()
    p = subparsers.add_parser(
        "synth", help="generate a synthetic long-tailed product data set",
        description="Generate procedural long-tailed product data (images, noisy titles and "
                    "tags) in the SICoT dataset format.")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier synth output)")
    p.add_argument("--classes", type=int, default=d.classes, help=f"number of classes (default {d.classes}, at most 1,228,800)")
    p.add_argument("--imbalance", type=float, default=d.imbalance, help=f"head/tail training-count ratio R (default {d.imbalance:g})")
    p.add_argument("--max-per-class", type=int, default=d.max_per_class, help=f"training images of the head class (default {d.max_per_class})")
    p.add_argument("--eval-per-class", type=int, default=d.eval_per_class, help=f"eval images per class (default {d.eval_per_class})")
    p.add_argument("--test-per-class", type=int, default=d.test_per_class, help=f"test images per class (default {d.test_per_class})")
    p.add_argument("--image-size", type=int, default=d.image_size, help=f"image side in pixels (default {d.image_size})")
    p.add_argument("--noise", type=float, default=d.noise, help=f"text noise level 0..1 (default {d.noise:g})")
    p.add_argument("--png-fraction", type=float, default=d.png_fraction, help=f"share of images written as PNG (default {d.png_fraction:g})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--metadata-only", action="store_true", help="write classes and manifest text without images (for huge class counts)")
    p.add_argument("--images-for", type=int, default=0, metavar="K", help="with --metadata-only: render images for K classes spread from head to tail")
    p.add_argument("--new-skus", type=int, default=0, metavar="N", help="hold N more classes out of training as new products: catalogue.jsonl (listing + photos), test photos in test.jsonl, labels in new_skus.json")
    p.add_argument("--new-sku-photos", type=int, default=d.new_sku_photos, help=f"catalogue photos per new SKU (default {d.new_sku_photos})")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1); output is identical for any value")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_synth)

    d = ImportConfig()
    p = subparsers.add_parser(
        "import", help="convert a dataset folder into GZIP TFRecords of tf.Example",
        description="Validate every record of a dataset folder and write GZIP TFRecords of "
                    "tf.Example; bad records go to quarantine.jsonl with a reason.")
    p.add_argument("--data", required=True, help="dataset folder holding train and test manifests")
    p.add_argument("--out", required=True, help="output folder for <split>-00000-of-00001.tfrecord.gz")
    p.add_argument("--max-bad-fraction", type=float, default=d.max_bad_fraction, help=f"fail when a split has a larger share of bad records (default {d.max_bad_fraction:g})")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help=f"largest image width x height (default {d.max_pixels})")
    p.add_argument("--max-image-bytes", type=int, default=d.max_image_bytes, help=f"largest image file (default {d.max_image_bytes})")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR", help="absolute folder that absolute image paths may point into (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_import)


def _synth(args) -> int:
    from sicot.data.synth import SynthConfig, generate

    config = SynthConfig(
        classes=args.classes, imbalance=args.imbalance, max_per_class=args.max_per_class,
        eval_per_class=args.eval_per_class, test_per_class=args.test_per_class,
        image_size=args.image_size, noise=args.noise, seed=args.seed,
        png_fraction=args.png_fraction, metadata_only=args.metadata_only,
        images_for=args.images_for, new_skus=args.new_skus, new_sku_photos=args.new_sku_photos)
    generate(config, args.out, workers=args.workers, progress=not args.no_progress)
    return 0


def _import(args) -> int:
    from sicot.data.importer import ImportConfig, import_dataset
    from sicot.paths import absolute

    config = ImportConfig(max_pixels=args.max_pixels, max_image_bytes=args.max_image_bytes,
                          allowed_dirs=tuple(absolute(d) for d in args.allow_dir),
                          max_bad_fraction=args.max_bad_fraction)
    import_dataset(args.data, args.out, config, progress=not args.no_progress)
    return 0
