"""Issue 13: how long `sicot enroll` takes for N catalogue SKUs (default 1,000).

    nice -n 5 .venv/bin/python bench/enrollment_timing.py --model RUNS/seed0/sicot \\
        --data /tmp/catalog-synth --skus 1000 --photos 5 --out /tmp/enrol_timing

Writes DATA/bench_catalogue_<N>x<K>.jsonl: N SKUs named bench-00000.., each with K photos taken
in turn from DATA's training images (so every photo is a real decodable image under the path
rule) and the title and tags of the first of them; then runs `enroll_folder` once into OUT and
writes OUT/timing.json: the enrolment itself (embedding + prototypes + offsets), the SavedModel
export, and the whole command including the model load, with the machine's load average at the
start (this machine is shared: the numbers are upper bounds for 2 idle cores).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time


def write_catalogue(data_dir: str, skus: int, photos: int) -> str:
    with open(os.path.join(data_dir, "train.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    path = os.path.join(data_dir, f"bench_catalogue_{skus}x{photos}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(skus):
            rows = [records[(i * photos + j) % len(records)] for j in range(photos)]
            f.write(json.dumps({"label": f"bench-{i:05d}", "title": rows[0].get("title", ""),
                                "tags": rows[0].get("tags", []),
                                "images": [r["image"] for r in rows]}) + "\n")
    return path


def main(argv=None) -> int:
    from sicot.trainer.enrollment.catalogue import enroll_folder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="`sicot train --out` folder")
    parser.add_argument("--data", required=True, help="dataset folder (train.jsonl + images)")
    parser.add_argument("--skus", type=int, default=1000)
    parser.add_argument("--photos", type=int, default=5, help="photos per SKU")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    catalogue = write_catalogue(args.data, args.skus, args.photos)
    shutil.rmtree(args.out, ignore_errors=True)
    load = os.getloadavg()
    start = time.perf_counter()
    report = enroll_folder(args.model, catalogue, args.out, log=lambda *_: None)
    total = time.perf_counter() - start
    result = {"skus": args.skus, "photos_per_sku": args.photos,
              "new_classes": report["new_classes"], "items": report["items"],
              "enrol_seconds": report["enrol_seconds"],
              "export_seconds": report["export_seconds"], "command_seconds": total,
              "load_average_1_5_15_at_start": list(load), "cpus": os.cpu_count(),
              "model": os.path.abspath(args.model), "catalogue": catalogue}
    with open(os.path.join(args.out, "timing.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
