"""The main job at 100k and 1M images with flat driver memory, and streamed k-means against in-memory.

    python bench/scale.py                                  # the issue's figures (~45 min on 2 cores)
    python bench/scale.py --sizes 20000 100000 --seeds 0 --json rows.jsonl

1. A procedural corpus (64 classes: shapes x colours x textures, 32x32 JPEGs, `data=procedural`)
   per size, built once as WebDataset shards under --work and reused.
2. `jobs/train.py` end to end per size, in its own process (shards -> Ray Data pixels at 8x8x3 =
   192 dims -> k-means -> assignments -> report), every store read streamed through Ray Data
   (`cluster.stream.local_bytes=0`). While it runs, the job's process tree is polled each second:
   `cluster_peak_rss_gib` is the peak of the summed PSS (proportional set size: a page shared by
   several processes, e.g. the object store, is split between them, so it is counted once) of
   the driver and every process under it (GCS, raylet, workers); `driver_peak_rss_gib` is the
   driver's own high-water mark (getrusage), which the job records in its summary.
   `rows_ok`: the assignments hold every corpus key exactly once.
3. Streamed vs in-memory k-means on the same vectors, per seed: the streamed path is the job's
   own (`fitting.fit_off_driver` of `KMeans.fit_rows` on a `StoreRows`, then `assign.assign_rows`);
   in-memory is `KMeans.fit` on the whole matrix in this process. On ImageNet-50 (2,500 x 384)
   FAISS's sample rule (256 x K) covers every row, so the streamed fit sees all of them; a second
   row forces a 16 x K sample so the Lloyd passes do the work.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import SHARED, append_json_rows, parse_with_work_dir  # noqa: E402

BACKBONE = ["backbone=pixels", "backbone.extractor.size=8", "backbone.extractor.channels=3"]


def build_corpus(n: int, work: Path) -> Path:
    """Shards of the n-image procedural corpus (built once; a finished manifest means reuse)."""
    from raycluster.data.builtin import procedural_samples
    from raycluster.data.shards import read_manifest, write_shards

    shards = work / f"corpus-{n}"
    manifest = read_manifest(str(shards))
    if manifest and manifest["num_samples"] == n:
        return shards
    start = time.time()
    write_shards(procedural_samples(n), str(shards), samples_per_shard=5000, source={"kind": "procedural", "limit": n})
    print(f"corpus of {n:,} images written in {time.time() - start:.0f}s -> {shards}", flush=True)
    return shards


class TreeMemory(threading.Thread):
    """Peak of the summed PSS of a process and all its descendants, polled every `every` s."""

    def __init__(self, pid: int, every: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.done = pid, every, 0, threading.Event()

    def run(self):
        import psutil

        while not self.done.is_set():
            try:
                root = psutil.Process(self.pid)
                total = 0
                for process in [root, *root.children(recursive=True)]:
                    try:
                        total += process.memory_full_info().pss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
                self.peak = max(self.peak, total)
            except psutil.NoSuchProcess:
                return
            self.done.wait(self.every)


def run_job(n: int, shards: Path, work: Path, seed: int) -> dict:
    """jobs/train.py on the corpus with a fresh embedding cache; returns the bench row."""
    import shutil

    cache, run = work / f"cache-{n}", work / f"run-{n}"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    args = [sys.executable, str(REPO / "jobs" / "train.py"), "data=shards", f"data.shards={shards}",
            f"data.name=procedural-{n}", "data.num_clusters=64", *BACKBONE, "cluster.stream.local_bytes=0",
            f"cache_dir={cache}", f"output_dir={run}", f"seed={seed}"]
    start = time.time()
    with open(work / f"job-{n}.log", "w") as log:
        job = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        memory = TreeMemory(job.pid)
        memory.start()
        code = job.wait()
        memory.done.set()
    wall = time.time() - start
    if code != 0:
        raise RuntimeError(f"jobs/train.py failed for n={n} (exit {code}); see {work / f'job-{n}.log'}")
    summary = json.loads((run / "summary.json").read_text())
    metrics = summary["metrics"]
    stages = {"extract": summary["extract_seconds"], "fit": metrics["fit_seconds"],
              "assign": metrics["assign_seconds"], "report": summary.get("report_seconds", 0.0)}
    row = {"case": "job", "n": n, "method": "kmeans", "dim": summary["dim"], "total_seconds": round(wall, 1),
           "job_seconds": summary["total_seconds"],
           **{f"{stage}_seconds": round(float(value), 1) for stage, value in stages.items()},
           **{f"{stage}_images_per_s": round(n / float(value)) if value else None for stage, value in stages.items()},
           "driver_peak_rss_gib": summary["driver_peak_rss_gib"],
           "cluster_peak_rss_gib": round(memory.peak / 2**30, 3),
           "rows_ok": assignments_complete(summary["outputs"]["assignments"], n),
           "acc": round(metrics["acc"], 4), "nmi": round(metrics["nmi"], 4),
           "embeddings": summary["outputs"]["embeddings"]}
    return row


def assignments_complete(path: str, n: int) -> bool:
    """Every key proc_<i>, i < n, appears exactly once."""
    import pyarrow.parquet as pq

    keys = pq.read_table(path, columns=["key"]).column("key").to_numpy(zero_copy_only=False)
    if len(keys) != n:
        return False
    ids = np.sort(np.array([int(k[5:]) for k in keys]))
    return bool((ids == np.arange(n)).all())


def streamed_vs_in_memory(name: str, store_dir: str, k: int, seeds: list[int], n_init: int,
                          max_points_per_centroid: int = 256) -> dict:
    """ACC of the streamed k-means path and of in-memory KMeans.fit on the same vectors, per seed."""
    from raycluster.assign import assign_rows
    from raycluster.data.rows import store_rows
    from raycluster.app.fitting import fit_off_driver
    from raycluster.methods.kmeans.method import FaissKMeans
    from raycluster.metrics import supervised_metrics

    rows = store_rows(store_dir, local_bytes=0)
    data = rows.load()
    streamed, in_memory, seconds = [], [], {"streamed": 0.0, "in_memory": 0.0}
    for seed in seeds:
        start = time.time()
        method = fit_off_driver(FaissKMeans(k, n_init=n_init, seed=seed, max_points_per_centroid=max_points_per_centroid),
                                rows)
        stats, _ = assign_rows(method, rows, os.path.join(store_dir + "-assign", f"seed{seed}"))
        seconds["streamed"] += time.time() - start
        streamed.append(stats.metrics()["acc"])
        start = time.time()
        cluster, _ = FaissKMeans(k, n_init=n_init, seed=seed).fit(data.vectors).predict(data.vectors)
        seconds["in_memory"] += time.time() - start
        in_memory.append(supervised_metrics(data.labels, cluster)["acc"])
        print(f"  {name} seed {seed}: streamed {streamed[-1]:.4f}  in-memory {in_memory[-1]:.4f}", flush=True)
    return {"case": "streamed_vs_in_memory", "dataset": name, "n": len(data.keys), "k": k, "n_init": n_init,
            "max_points_per_centroid": max_points_per_centroid, "sample_rows": method.refine_info.get("sample_rows"),
            "refine_passes": method.refine_info.get("passes"), "seeds": seeds,
            "acc_streamed": round(float(np.mean(streamed)), 4), "acc_in_memory": round(float(np.mean(in_memory)), 4),
            "acc_streamed_per_seed": [round(a, 4) for a in streamed],
            "acc_in_memory_per_seed": [round(a, 4) for a in in_memory],
            "seconds_streamed": round(seconds["streamed"], 1), "seconds_in_memory": round(seconds["in_memory"], 1)}


def imagenet50_store(work: Path) -> str | None:
    import torch

    from raycluster.data.store import EmbeddingStore

    folder = SHARED / "imagenet50-dino-vits16"
    if not folder.exists():
        print(f"skipped ImageNet-50: {folder} not found")
        return None
    vectors = torch.load(folder / "features_val.pth").float().numpy()
    labels = torch.load(folder / "labels_val.pth").numpy()
    root = work / "imagenet50-store"
    store = EmbeddingStore(str(root))
    for part in range(5):   # five parts of 500 rows, as five shards would give
        rows = slice(part * 500, (part + 1) * 500)
        store.write_part(f"part{part}", [f"in50_{i:05d}" for i in range(rows.start, rows.stop)], labels[rows],
                         vectors[rows], from_shard=False)
    return str(root)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-init", type=int, default=3, help="k-means restarts in the streamed/in-memory comparison")
    args, work, machine = parse_with_work_dir(parser, REPO / "outputs" / "bench-scale")

    rows = []
    for n in args.sizes:
        shards = build_corpus(n, work)
        row = run_job(n, shards, work, args.seeds[0])
        row["machine"] = machine
        rows.append(row)
        print(json.dumps(row), flush=True)
    jobs = [r for r in rows if r["case"] == "job"]
    if len(jobs) >= 2:
        small, large = jobs[0], jobs[-1]
        rows.append({"case": "scaling", "n_small": small["n"], "n_large": large["n"],
                     "driver_rss_ratio": round(large["driver_peak_rss_gib"] / small["driver_peak_rss_gib"], 3),
                     "wall_time_ratio": round(large["total_seconds"] / small["total_seconds"], 2),
                     "size_ratio": large["n"] / small["n"], "machine": machine})

    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    imagenet = imagenet50_store(work)
    if imagenet:
        for points in (256, 16):
            rows.append({**streamed_vs_in_memory("imagenet50-dino-vits16", imagenet, 50, args.seeds, args.n_init,
                                                 points), "machine": machine})
    largest = jobs[-1]
    rows.append({**streamed_vs_in_memory(f"procedural-{largest['n']}", largest["embeddings"], 64, args.seeds,
                                         args.n_init), "machine": machine})
    ray.shutdown()

    print("\n| case | n | key figures |\n|---|---|---|")
    for row in rows:
        shown = {k: v for k, v in row.items() if k not in ("case", "n", "machine", "embeddings")}
        print(f"| {row['case']} | {row.get('n', '')} | " + ", ".join(f"{k}={v}" for k, v in shown.items()) + " |")
    append_json_rows(args.json, rows)


if __name__ == "__main__":
    main()
