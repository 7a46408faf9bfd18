"""Curation at scale: hierarchical k-means, balanced sampling and semantic dedup, measured.

    python bench/curation.py                       # all three parts, the issue's figures (~25 min on 2 cores)
    python bench/curation.py --parts hierarchy --n 200000 --json rows.jsonl

hierarchy  1,000,000 x 64 vectors from a 3-level Gaussian tree (10 x 10 x 10 leaves, labels at
           every level). (a) hkmeans [1000, 100, 10] vs flat FAISS k-means at K = 1000, 100, 10:
           NMI per level. (b) hkmeans [10000, 1000, 100] vs flat FAISS k-means at K = 10,000:
           level-1 objective (inertia, summed squared distances over every row) and seconds.
           Flat k-means is faiss.Kmeans with its defaults (25 iterations, 256 x K training rows);
           hkmeans fits on the same 256 x K rows rule (all rows here).
sampling   a long-tailed corpus: 300 classes of a Gaussian tree (5 x 6 x 10) with Zipf(1.1) sizes;
           hkmeans [300, 30, 5], then M = 10,000 keys by hierarchical balanced sampling
           (raycluster.curation.sampling) vs a uniform random sample of the same M:
           class_entropy = entropy of the sample's class histogram / log(classes).
dedup      the 10,100 Tiny-ImageNet val photos plus 1,000 near-duplicates made here from random
           ones (JPEG quality 40-70, resize 0.7-0.9x, 90% crop, horizontal flip, +-10% brightness;
           each recorded; `--seed` picks them), features through the project's extraction
           (`--backbone`, default effnet_lite0_copies: Lite0 on 32-px thumbnails, flip-averaged);
           k-means (`--dedup-k` 10: ~1,100 rows a cluster), then what jobs/dedup.py does: whitened
           cosine minus the background (`--background-rank`), searched in each row's own cluster
           (clusters_1probe), in its `--probes` nearest (clusters_2probe), and over all pairs at
           once (exact). precision: of the (kept, removed-for-it) pairs, the injected ones;
           recall: injected (original, copy) pairs whose two images share a group.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import SHARED, append_json_rows, parse_with_work_dir  # noqa: E402

from raycluster.methods.hkmeans.method import HierarchicalKMeans, nearest  # noqa: E402
from raycluster.metrics import supervised_metrics  # noqa: E402


def gaussian_tree(branching: tuple, points_per_leaf, dim: int = 64, spreads=(10.0, 3.0, 1.0), noise: float = 0.5,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vectors (n, dim) float32 and labels (n, levels) int64, leaf label first, from a tree with
    `branching` children per level (top first). points_per_leaf: an int, or (leaves,) sizes."""
    rng = np.random.default_rng(seed)
    centres, labels = np.zeros((1, dim)), [np.zeros(1, np.int64)]
    for fanout, spread in zip(branching, spreads):
        centres = np.repeat(centres, fanout, axis=0) + rng.normal(0, spread, (len(centres) * fanout, dim))
        labels = [np.repeat(level, fanout) for level in labels] + [np.arange(len(centres))]
    sizes = np.full(len(centres), points_per_leaf) if np.isscalar(points_per_leaf) else np.asarray(points_per_leaf)
    leaf = np.repeat(np.arange(len(centres)), sizes)
    vectors = (centres[leaf] + rng.normal(0, noise, (len(leaf), dim))).astype(np.float32)
    levels = np.stack([level[leaf] for level in labels[1:][::-1]], axis=1)   # leaf level first
    return vectors, levels


def inertia(vectors: np.ndarray, centroids: np.ndarray) -> float:
    return float(nearest(vectors, centroids)[1].astype(np.float64).sum())


def hierarchy_rows(n: int, seed: int) -> list[dict]:
    vectors, labels = gaussian_tree((10, 10, 10), n // 1000, seed=seed)
    rows = []
    for levels in ([1000, 100, 10], [10000, 1000, 100]):
        start = time.time()
        model = HierarchicalKMeans(levels, seed=seed)
        rng = np.random.default_rng(seed)
        sample = min(len(vectors), 256 * levels[0])
        model.fit(vectors[rng.choice(len(vectors), sample, replace=False)] if sample < len(vectors) else vectors)
        assigned = model.predict_levels(vectors)
        seconds = time.time() - start
        row = {"case": "hierarchy", "method": "hkmeans", "levels": levels, "n": len(vectors),
               "inertia": inertia(vectors, model.centroids[0]), "seconds": round(seconds, 1)}
        if levels[0] == 1000:   # the tree's own levels: 1,000 leaves, 100, 10
            for i in range(len(levels)):
                row[["nmi_leaf", "nmi_l2", "nmi_l3"][i]] = round(supervised_metrics(labels[:, i], assigned[:, i])["nmi"], 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for k, label_level in ((1000, 0), (100, 1), (10, 2), (10000, 0)):
        import faiss

        start = time.time()
        kmeans = faiss.Kmeans(vectors.shape[1], k, seed=seed)   # FAISS defaults: 25 iterations, 256 x K rows
        kmeans.train(vectors)
        cluster, distance = nearest(vectors, kmeans.centroids)
        seconds = time.time() - start
        row = {"case": "hierarchy", "method": "kmeans", "levels": [k], "n": len(vectors),
               "inertia": float(distance.astype(np.float64).sum()), "seconds": round(seconds, 1),
               "nmi_leaf" if label_level == 0 else f"nmi_l{label_level + 1}":
                   round(supervised_metrics(labels[:, label_level], cluster)["nmi"], 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def class_entropy(classes: np.ndarray, n_classes: int) -> float:
    p = np.bincount(classes, minlength=n_classes).astype(np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum() / np.log(n_classes))


def sampling_rows(m: int, seed: int, work: Path) -> list[dict]:
    from raycluster.assign import assign_rows
    from raycluster.curation.sampling import SamplingConfig, curate
    from raycluster.data.rows import StoreRows
    from raycluster.data.store import EmbeddingStore

    classes = 300
    zipf = 1.0 / np.arange(1, classes + 1) ** 1.1
    sizes = np.maximum(1, np.round(zipf / zipf.sum() * 300_000)).astype(np.int64)
    sizes = np.random.default_rng(seed).permutation(sizes)
    vectors, labels = gaussian_tree((5, 6, 10), sizes, seed=seed)
    store = EmbeddingStore(str(work / "longtail-store"))
    keys = np.array([f"lt_{i:07d}" for i in range(len(vectors))], dtype=object)
    for part, rows in enumerate(np.array_split(np.arange(len(vectors)), 10)):
        store.write_part(f"part{part}", keys[rows], labels[rows, 0], vectors[rows], from_shard=False)
    model = HierarchicalKMeans([300, 30, 5], seed=seed).fit(vectors)
    assignments = str(work / "longtail-assignments")
    assign_rows(model, StoreRows(store), assignments)
    start = time.time()
    curated = curate(assignments, SamplingConfig(m, "closest", seed))
    seconds = time.time() - start
    picked = np.array([int(k[3:]) for k in curated.column("key").to_pylist()])
    random = np.random.default_rng(seed).choice(len(vectors), m, replace=False)
    rows = [{"case": "sampling", "method": "curated", "m": m, "n": len(vectors), "classes": classes,
             "class_entropy": round(class_entropy(labels[picked, 0], classes), 4), "seconds": round(seconds, 1)},
            {"case": "sampling", "method": "random", "m": m, "n": len(vectors), "classes": classes,
             "class_entropy": round(class_entropy(labels[random, 0], classes), 4)},
            {"case": "sampling", "method": "corpus", "n": len(vectors), "classes": classes,
             "class_entropy": round(class_entropy(labels[:, 0], classes), 4)}]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def near_duplicate(data: bytes, rng) -> tuple[bytes, dict]:
    """One near-duplicate of an encoded image, and what was done to it."""
    from PIL import Image, ImageEnhance, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
    scale, quality = rng.uniform(0.7, 0.9), int(rng.integers(40, 71))
    brightness, flip = rng.uniform(0.9, 1.1), bool(rng.integers(0, 2))
    w, h = image.size
    crop = image.crop((round(w * 0.05), round(h * 0.05), round(w * 0.95), round(h * 0.95)))   # 90% crop
    out = crop.resize((max(1, round(crop.size[0] * scale)), max(1, round(crop.size[1] * scale))), Image.BICUBIC)
    out = ImageEnhance.Brightness(out).enhance(brightness)
    if flip:
        out = ImageOps.mirror(out)
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), {"quality": quality, "scale": round(scale, 3), "crop": 0.9, "flip": flip,
                               "brightness": round(brightness, 3)}


def dedup_rows_bench(thresholds: list[float], copies: int, seed: int, work: Path, backbone_name: str,
                     k: int = 10, probes: int = 2, background_rank: int = 5) -> list[dict]:
    from raycluster.config import ClusterConfig, DataConfig, compose
    from raycluster.curation.dedup import DedupConfig, dedup_table, fit_whitener, probe_clusters
    from raycluster.data.builtin import Sample, folder_samples, read_class_names
    from raycluster.data.postprocess import Postprocess
    from raycluster.data.rows import StoreRows
    from raycluster.data.shards import read_manifest, write_shards
    from raycluster.data.store import EmbeddingStore
    from raycluster.features.extract import run_extraction
    from raycluster.methods.kmeans.method import FaissKMeans
    from raycluster.ray_utils import ensure_ray

    root = SHARED / "tinyimagenet-val" / "images"
    if not root.exists():
        print(f"skipped dedup: {root} not found")
        return []
    shards = work / f"dedup-shards-seed{seed}"     # the copies (which photos, which edits) follow the seed
    pairs_file = work / f"dedup-pairs-seed{seed}.json"
    if not read_manifest(str(shards)):
        originals = list(folder_samples(str(root), class_names=read_class_names(str(root))))
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(originals), copies, replace=False)
        made, pairs = [], []
        for i, index in enumerate(chosen):
            data, edits = near_duplicate(originals[index].image, rng)
            key = f"dup{i:04d}"
            made.append(Sample(key, data, "jpg", originals[index].label, {"of": originals[index].key, **edits}))
            pairs.append([originals[index].key, key, edits])
        write_shards(iter(originals + made), str(shards), 1000, source={"kind": "tinyimagenet-val+near-duplicates"})
        pairs_file.write_text(json.dumps(pairs))
    pairs = json.loads(pairs_file.read_text())
    store_dir = str(work / f"dedup-store-{backbone_name}-seed{seed}")
    ensure_ray(None, None)
    backbone = compose([f"backbone={backbone_name}"]).backbone
    run_extraction(DataConfig(name="dedup", shards=str(shards), source=None), backbone, ClusterConfig(), store_dir)
    data = StoreRows(EmbeddingStore(store_dir)).load()
    # the run's post-processing and clusters (jobs/train.py backbone=<backbone> method=kmeans), then
    # what jobs/dedup.py does with them (raycluster.curation.dedup.duplicate_records), in memory
    post = Postprocess.fit(data.vectors, backbone.pca_dim, backbone.l2_normalize, seed, backbone.whiten)
    data.vectors = post(data.vectors)
    true_pairs = {tuple(sorted(p[:2])) for p in pairs}
    model = FaissKMeans(k, n_init=1, seed=seed).fit(data.vectors)
    home, _ = model.predict(data.vectors)
    means = np.stack([data.vectors[home == c].mean(axis=0) for c in range(k)])
    rows = []
    for threshold in thresholds:
        config = DedupConfig(threshold, probes=probes, background_rank=background_rank)
        compared = fit_whitener(data.vectors, config)(data.vectors)
        searches = {f"clusters_{p}probe": probe_clusters(data.vectors, home, means, p) for p in sorted({1, probes})}
        searches["exact"] = np.zeros(len(home), np.int64)
        for method, probed in searches.items():
            start = time.time()
            found = dedup_table(data.keys, probed, compared, config)
            seconds = time.time() - start
            # predicted pairs: (kept row, each row removed for it); an injected pair is found when
            # both of its images are in one group (one of them is removed)
            groups, kept, keys = found["group"], found["kept"], found["key"]
            representative = {g: key for g, key, keep in zip(groups, keys, kept) if g >= 0 and keep}
            predicted = {tuple(sorted((representative[g], key))) for g, key, keep in zip(groups, keys, kept)
                         if g >= 0 and not keep}
            group_of = {key: g for key, g in zip(keys, groups) if g >= 0}
            found_pairs = sum(1 for a, b in true_pairs if a in group_of and group_of.get(b) == group_of[a])
            row = {"case": "dedup", "method": method, "backbone": backbone_name, "threshold": threshold,
                   "background_rank": background_rank, "same_image": config.same_image, "whiten": config.whiten,
                   "copies_seed": seed,
                   "n": len(data.keys),
                   "injected_pairs": len(true_pairs), "predicted_pairs": len(predicted),
                   "precision": round(len(predicted & true_pairs) / max(1, len(predicted)), 4),
                   "recall": round(found_pairs / len(true_pairs), 4),
                   "removed": int((~found["kept"]).sum()), "seconds": round(seconds, 2), "k": k}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["hierarchy", "sampling", "dedup"])
    parser.add_argument("--n", type=int, default=1_000_000, help="hierarchy: rows (1,000 leaves)")
    parser.add_argument("--m", type=int, default=10_000, help="sampling: keys picked")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.25, 0.3, 0.35],
                        help="dedup: pair score thresholds (whitened cosine minus the background, configs/dedup.yaml)")
    parser.add_argument("--dedup-k", type=int, default=10, help="dedup: k-means clusters the pairs are searched in")
    parser.add_argument("--probes", type=int, default=2, help="dedup: clusters each row is searched in")
    parser.add_argument("--background-rank", type=int, default=5, help="dedup: 0 scores by plain cosine")
    parser.add_argument("--backbone", default="effnet_lite0_copies",
                        help="dedup: the descriptor (effnet_lite0: the semantic features, for comparison)")
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args, work, machine = parse_with_work_dir(parser, REPO / "outputs" / "bench-curation")
    rows = []
    if "hierarchy" in args.parts:
        rows += hierarchy_rows(args.n, args.seed)
    if "sampling" in args.parts:
        rows += sampling_rows(args.m, args.seed, work)
    if "dedup" in args.parts:
        rows += dedup_rows_bench(args.thresholds, args.copies, args.seed, work, args.backbone, args.dedup_k,
                                 args.probes, args.background_rank)
    for row in rows:
        row["machine"] = machine
    print("\n| case | method | figures |\n|---|---|---|")
    for row in rows:
        shown = {k: v for k, v in row.items() if k not in ("case", "method", "machine")}
        print(f"| {row['case']} | {row['method']} | " + ", ".join(f"{k}={v}" for k, v in shown.items()) + " |")
    append_json_rows(args.json, rows)


if __name__ == "__main__":
    main()
