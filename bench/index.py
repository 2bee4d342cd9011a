#!/usr/bin/env python3
"""Vector search: Strix's index (usearch HNSW inside, stored in the registry) against FAISS's
HNSW (the peer people run from Python) and against exact search (Strix's scan, and FAISS's
IndexFlatIP on BLAS: the physical limit of comparing every vector).

- Synthetic: N (100k) x 512-d unit vectors around 1000 random centres (clustered, so
  neighbours are not trivial), 1000 queries drawn the same way; fixed seed.
- Real: EfficientNet-Lite0 embeddings (`strix predict --task embed --json`) of the fixture
  photos and of random augmentations of them (crops 60-100%, brightness 0.7-1.3, mirrors,
  JPEG quality 30-95), queries are further augmentations. At this size the stored index scans
  (vectors x dimensions under 4 million); a graph is built in memory to measure its recall.
- recall@10 is against exact top-10 (FAISS IndexFlatIP). Strix's answers after reloading the
  index from the store are compared with the first load's (must be identical).
- Times are per single query, one thread, median over the queries; Strix's are measured in its
  own process (bench/index runs crates/strix-index/examples/index_bench.rs, release build).

Goals (issue 34): recall@10 >= 0.95 on both sets; at 100k, the median query >= 10x faster
than exact; answers after a reload from the store identical.

Usage: bench/index.py [--vectors N] [--queries Q] [--real-images M]
(after ./scripts/setup, `source scripts/env.sh` and `.venv/bin/pip install faiss-cpu`).
"""
import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from strix_run import FIXTURES, ROOT, environment, json_lines, strix_binary

K = 10


def clustered(n, d, centres, rng):
    c = rng.standard_normal((centres, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + rng.standard_normal((n, d)).astype(np.float32) * 0.04
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def augment(img, rng):
    from PIL import Image, ImageEnhance, ImageOps

    w, h = img.size
    s = rng.uniform(0.6, 1.0)
    cw, ch = int(w * s), int(h * s)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = img.crop((x, y, x + cw, y + ch))
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.7, 1.3))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=rng.randint(30, 95))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def real_embeddings(m, queries, folder):
    from PIL import Image

    rng = random.Random(7)
    photos = sorted(os.path.join(FIXTURES, "images", f) for f in os.listdir(os.path.join(FIXTURES, "images")))
    sources = [Image.open(p).convert("RGB") for p in photos]
    for i in range(m + queries):
        src = sources[i % len(sources)]
        img = src if i < len(sources) else augment(src, rng)
        img.save(os.path.join(folder, f"{i:05}.png"))
    out = subprocess.run([strix_binary(), "--quiet", "predict", "--task", "embed", "--json", folder],
                         capture_output=True, text=True, check=True, env=environment()).stdout
    vectors = {os.path.basename(l["Image"]): l["Embedding"] for l in json_lines(out)}
    ordered = np.array([vectors[f"{i:05}.png"] for i in range(m + queries)], dtype=np.float32)
    return ordered[:m], ordered[m:]


def faiss_side(x, q):
    import faiss

    faiss.omp_set_num_threads(1)
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    _, truth = exact.search(q, K)
    exact_us = []
    for row in q:
        t = time.perf_counter()
        exact.search(row[None], K)
        exact_us.append((time.perf_counter() - t) * 1e6)
    faiss.omp_set_num_threads(os.cpu_count())
    hnsw = faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 128
    t = time.perf_counter()
    hnsw.add(x)
    build = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    hnsw.hnsw.efSearch = 64
    hnsw_us, found = [], 0
    for i, row in enumerate(q):
        t = time.perf_counter()
        _, ids = hnsw.search(row[None], K)
        hnsw_us.append((time.perf_counter() - t) * 1e6)
        found += len(set(ids[0]) & set(truth[i]))
    return truth, {"exact_median_us": statistics.median(exact_us), "hnsw_median_us": statistics.median(hnsw_us),
                   "hnsw_build_s": build, "hnsw_recall": found / (K * len(q))}


def strix_side(x, q, folder, profile):
    np.save(os.path.join(folder, "x.npy"), x)
    np.save(os.path.join(folder, "q.npy"), q)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    exe = os.path.join(target, "debug" if profile == "dev" else profile, "examples", "index_bench")
    out = subprocess.run([exe, os.path.join(folder, "x.npy"), os.path.join(folder, "q.npy"), str(K)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def report(name, x, q, folder, profile):
    truth, peer = faiss_side(x, q)
    ours = strix_side(x, q, folder, profile)
    speedup = ours["exact_median_us"] / ours["graph_median_us"]
    print(f"\n{name}: {x.shape[0]} x {x.shape[1]}, {len(q)} queries, recall@{K} against exact")
    print(f"  strix graph   median {ours['graph_median_us']:8.1f} us  recall {ours['recall']:.4f}  "
          f"(add {ours['add_s']:.1f} s incl. graph build, load from store {ours['load_s']:.2f} s, "
          f"graph in store: {ours['graph_in_store']}, reload identical: {ours['reload_identical']})")
    print(f"  strix exact   median {ours['exact_median_us']:8.1f} us  -> graph {speedup:.1f}x faster")
    print(f"  faiss hnsw    median {peer['hnsw_median_us']:8.1f} us  recall {peer['hnsw_recall']:.4f}  "
          f"(build {peer['hnsw_build_s']:.1f} s)  strix/faiss time {ours['graph_median_us'] / peer['hnsw_median_us']:.2f}")
    print(f"  faiss exact   median {peer['exact_median_us']:8.1f} us (BLAS, the physical limit of a scan)  "
          f"strix scan/faiss scan {ours['exact_median_us'] / peer['exact_median_us']:.2f}")
    if ours["graph_forced"]:
        # A small index scans (exact) and stores no graph: the speed goal is
        # for the graph at scale; here the graph's recall on real vectors is what is checked.
        ok = ours["recall"] >= 0.95 and ours["reload_identical"]
        print(f"  (graph built for the measurement: the stored index scans at this size)")
        print(f"  goal (recall >= 0.95, reload identical): {'met' if ok else 'NOT met'}")
        return ok
    ok = ours["recall"] >= 0.95 and speedup >= 10 and ours["reload_identical"]
    print(f"  goal (recall >= 0.95, >= 10x exact, reload identical): {'met' if ok else 'NOT met'}")
    return ok


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vectors", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--real-images", type=int, default=2000)
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--profile", default="release",
                   help="cargo profile of the Strix side (dev: every crate optimised too, opt-level 2-3)")
    args = p.parse_args()
    subprocess.run(["cargo", "build", "--workspace", "--locked", "--profile", args.profile, "--example", "index_bench"],
                   cwd=ROOT, check=True)
    print(f"Strix side: cargo profile {args.profile}; machine: {os.cpu_count()} cores")
    rng = np.random.default_rng(42)
    with tempfile.TemporaryDirectory() as folder:
        ok = True
        if not args.skip_synthetic:
            data = clustered(args.vectors + args.queries, 512, 1000, rng)
            ok = report("synthetic clustered", data[:args.vectors], data[args.vectors:], folder, args.profile)
        images = os.path.join(folder, "images")
        os.makedirs(images)
        x, q = real_embeddings(args.real_images, min(args.queries, 200), images)
        ok &= report("real EfficientNet-Lite0 embeddings", x, q, folder, args.profile)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
