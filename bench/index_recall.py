"""Issue 13: recall@k and latency of `sicot index`'s approximate search against exact search,
at catalogue sizes up to 1,000,000 items.

    nice -n 5 .venv/bin/python bench/index_recall.py --items 1000000 --out /tmp/index_recall.json

Items are built like a catalogue's photos in the visual-embedding space (D = ModelConfig's
embedding_dim, 128): `--items / --photos-per-sku` SKU centres drawn at random on the sphere, each
SKU's photos unit(centre + noise), with the noise scaled so that two photos of one SKU have a
cosine of about `--same-sku-cosine` (0.8 by default, measured, not assumed: the JSON reports it).
Queries are new photos of random SKUs, made the same way and not in the index. The default
`--distribution hierarchical` adds product categories above the SKUs (`--skus-per-category` 50,
SKU centres of one category at cosine `--same-category-cosine` 0.5): beyond its own photos a
query's exact top k are then similar products. `catalogue` draws SKU centres independently, so
the neighbours after a SKU's own photos are near-orthogonal strangers whose order is noise (a
hard case for recall@k that says little about search quality); `gaussian` drops all structure
(i.i.d. unit vectors, the hardest case for graph and cell indexes).

`sku_photos_found` is the share of the query SKU's own photos among its k hits (exact search
reports it too): what a shopper sees. Each index kind is built once through `sicot.data.search_index.AnnIndex` (what `sicot index`
builds) and searched at several efforts: recall@k = |approximate top k ∩ exact top k| / k,
averaged over the queries, with exact top k from `exact_search` (blocked numpy inner product,
the same rule as the SavedModel's exact search). Latency: one query at a time with one FAISS
thread (p50 / p99 ms, what one serving request pays), and batch throughput with all threads.
Writes one JSON document (also printed); the load average at the start is in it: this machine
is shared, so latencies are upper bounds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _around(rng, centres, owners, cosine: float, dim: int):
    """unit(centre + noise) rows for `owners`, noise scaled so that two rows around one centre
    have a cosine of about `cosine` (unit(c + e), e ~ N(0, s^2 I): 1 / (1 + D s^2))."""
    from sicot.data.search_index import unit

    sigma = np.sqrt((1.0 / cosine - 1.0) / dim)
    out = np.empty((len(owners), dim), np.float32)
    for start in range(0, len(owners), 100_000):
        own = owners[start:start + 100_000]
        out[start:start + len(own)] = unit(
            centres[own] + rng.standard_normal((len(own), dim), dtype=np.float32) * sigma)
    return out


def make_vectors(rng, items: int, queries: int, dim: int, photos_per_sku: int,
                 same_sku_cosine: float, distribution: str, skus_per_category: int = 50,
                 same_category_cosine: float = 0.5):
    """(items [N, D], queries [Q, D], measured same-SKU cosine or None, item SKUs [N] or None,
    query SKUs [Q] or None), unit rows, float32."""
    from sicot.data.search_index import unit

    if distribution == "gaussian":
        return (unit(rng.standard_normal((items, dim), dtype=np.float32)),
                unit(rng.standard_normal((queries, dim), dtype=np.float32)), None, None, None)
    skus = max(1, items // photos_per_sku)
    centres = unit(rng.standard_normal((skus, dim), dtype=np.float32))
    if distribution == "hierarchical":
        categories = max(1, skus // skus_per_category)
        category_centres = unit(rng.standard_normal((categories, dim), dtype=np.float32))
        centres = _around(rng, category_centres, np.arange(skus) % categories,
                          same_category_cosine, dim)
    owners = np.arange(items) % skus
    vectors = _around(rng, centres, owners, same_sku_cosine, dim)
    query_owners = rng.integers(0, skus, queries)
    query_vectors = _around(rng, centres, query_owners, same_sku_cosine, dim)
    # measured: cosine between two photos of the same SKU (items i and i + skus share one)
    pairs = np.arange(min(10_000, items - skus)) if items > skus else np.arange(0)
    measured = (float(np.mean(np.sum(vectors[pairs] * vectors[pairs + skus], axis=1)))
                if len(pairs) else None)
    return vectors, query_vectors, measured, owners, query_owners


def recall_at_k(approx, exact, k: int) -> float:
    hits = [len(set(a[:k].tolist()) & set(e[:k].tolist())) for a, e in zip(approx, exact)]
    return float(np.mean(hits)) / k


def sku_photos_found(positions, owners, query_owners, photos_per_sku: int) -> float:
    """Mean share of the query SKU's indexed photos among a query's hits (what the shopper
    sees: the product's own photos found)."""
    found = [np.sum(owners[row[row >= 0]] == sku) for row, sku in zip(positions, query_owners)]
    return float(np.mean(found)) / photos_per_sku


def latency_ms(index, queries, k: int, repeats: int):
    """p50 / p99 ms of single-query searches (queries reused round robin)."""
    times = []
    for i in range(repeats):
        q = queries[i % len(queries)][None, :]
        start = time.perf_counter()
        index.search(q, k)
        times.append((time.perf_counter() - start) * 1000.0)
    times = np.asarray(times)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main(argv=None) -> int:
    import faiss

    from sicot.data.search_index import AnnIndex, exact_search
    from sicot.trainer.model.config import ModelConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=ModelConfig().embedding_dim)
    parser.add_argument("--photos-per-sku", type=int, default=5)
    parser.add_argument("--same-sku-cosine", type=float, default=0.8)
    parser.add_argument("--distribution", choices=("hierarchical", "catalogue", "gaussian"),
                        default="hierarchical")
    parser.add_argument("--skus-per-category", type=int, default=50)
    parser.add_argument("--same-category-cosine", type=float, default=0.5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kinds", nargs="+", default=["hnsw", "ivf"],
                        choices=["hnsw", "ivf", "flat"])
    parser.add_argument("--m", type=int, default=32, help="HNSW links per node")
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--nlist", type=int, default=None, help="IVF cells (default 4 sqrt N)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--latency-queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON output path")
    args = parser.parse_args(argv)
    if args.items < args.k or args.queries < 1:
        parser.error(f"--items {args.items} must be at least --k {args.k}, --queries >= 1")

    result = {"items": args.items, "queries": args.queries, "dim": args.dim, "k": args.k,
              "distribution": args.distribution, "photos_per_sku": args.photos_per_sku,
              "load_average_1_5_15_at_start": list(os.getloadavg()), "cpus": os.cpu_count(),
              "faiss": faiss.__version__, "indexes": []}
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    vectors, queries, measured, owners, query_owners = make_vectors(
        rng, args.items, args.queries, args.dim, args.photos_per_sku, args.same_sku_cosine,
        args.distribution, args.skus_per_category, args.same_category_cosine)
    result["same_sku_cosine_measured"] = measured
    result["generate_seconds"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    _, exact = exact_search(vectors, queries, args.k)
    result["exact_numpy_seconds_per_query"] = (time.perf_counter() - start) / len(queries)
    if owners is not None:
        result["exact_sku_photos_found"] = round(sku_photos_found(
            exact, owners, query_owners, args.photos_per_sku), 4)
    print(f"{args.items:,} items x {args.dim}; exact top-{args.k} of {len(queries)} queries in "
          f"{result['exact_numpy_seconds_per_query'] * len(queries):.1f} s", file=sys.stderr)
    ids = np.arange(args.items).astype(str)
    for kind in args.kinds:
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        start = time.perf_counter()
        index = AnnIndex.build(vectors, ids, ids, kind=kind, m=args.m,
                               ef_construction=args.ef_construction, nlist=args.nlist,
                               seed=args.seed)
        build = time.perf_counter() - start
        efforts = {"hnsw": args.ef_search, "ivf": args.nprobe, "flat": [None]}[kind]
        for effort in efforts:
            if kind == "hnsw":
                index.set_search_effort(ef_search=effort)
            elif kind == "ivf":
                index.set_search_effort(nprobe=effort)
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            start = time.perf_counter()
            _, approx = index.search(queries, args.k)
            batch_seconds = time.perf_counter() - start
            faiss.omp_set_num_threads(1)
            p50, p99 = latency_ms(index, queries, args.k, args.latency_queries)
            row = {"kind": kind, "effort": effort, "settings": dict(index.meta),
                   "build_seconds": round(build, 1),
                   f"recall_at_{args.k}": round(recall_at_k(approx, exact, args.k), 4),
                   "single_query_ms_p50": round(p50, 3), "single_query_ms_p99": round(p99, 3),
                   "batch_queries_per_second": round(len(queries) / batch_seconds, 1)}
            if owners is not None:
                row["sku_photos_found"] = round(sku_photos_found(
                    approx, owners, query_owners, args.photos_per_sku), 4)
            result["indexes"].append(row)
            print(json.dumps(row), file=sys.stderr)
        del index
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
