"""Can DiEC's output hold its start? Output forms scored against the UMAP + k-means start, one cell.

Study, 2026-12-04. Decision it produced: none yet (DEC's nearest-centre output cannot hold the start's partition; issue 30).

    python bench/studies/diec_output.py --work-dir outputs/bench/quality/digits/diec/seed0/diec
The work dir is one a DiEC fit left (bench/quality.py keeps it: `pretrained/` UNet and
`search/search.json` with the chosen layer and timestep); the rows are the cached pixel rows of
the same dataset (`--dataset`, the `digits` or `mnist-test` store bench/quality.py built).
On that cell's activations (DiEC's own embedding: configs/experiment/diec_mnist.yaml's pool and
draws, scaled as `DiEC.model_config` does) it fits the start (`start_clusters`: UMAP + k-means)
and scores, by ACC and by agreement with the start, what DiEC could output from it:
- nearest centre: the Student-t q of the start clusters' means (DEC's output at its first epoch);
- m prototypes a cluster: k-means with m centres inside each start cluster, q summed per cluster;
- k-NN vote: each row's k nearest other rows' start clusters (what `UMAPKMeans.predict` does).
No training; labels only score.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py
from common import append_json_rows  # noqa: E402

STORES = {"digits": ("outputs/cache/embeddings/digits-pixels", [1, 8, 8], 10),
          "mnist-test": ("outputs/cache/embeddings/mnist-pixels", [1, 28, 28], 10)}


def cluster_scores(labels, clusters, start) -> dict:
    from raycluster.metrics import supervised_metrics

    return {"acc": supervised_metrics(labels, clusters)["acc"], "agree_with_start": float((clusters == start).mean())}


def prototype_assignments(embeddings: np.ndarray, start: np.ndarray, k: int, per_cluster: int) -> np.ndarray:
    """(N, D) embeddings, (N,) start clusters -> (N,) argmax of Student-t q over `per_cluster`
    k-means prototypes inside each start cluster, summed per cluster."""
    import torch

    from raycluster.methods.diec.model import student_t_assignments
    from raycluster.methods.kmeans.method import FaissKMeans

    prototypes, owner = [], []
    for cluster in range(k):
        rows = embeddings[start == cluster]
        fitted = FaissKMeans(min(per_cluster, len(rows)), seed=0).fit(rows)
        prototypes.append(fitted.centroids)
        owner += [cluster] * len(fitted.centroids)
    q = student_t_assignments(torch.from_numpy(embeddings), torch.from_numpy(np.concatenate(prototypes)))
    return torch.zeros(len(embeddings), k).index_add_(1, torch.tensor(owner), q).argmax(1).numpy()


def knn_vote(embeddings: np.ndarray, start: np.ndarray, k: int, neighbours: int) -> np.ndarray:
    """(N,) majority start cluster among each row's `neighbours` nearest other rows."""
    from raycluster.neighbors.graph import without_self
    from raycluster.neighbors.manifold import flat_index, search_distances

    _, found = search_distances(flat_index(embeddings, "euclidean"), embeddings, neighbours + 1, "euclidean")
    found = found[without_self(found, np.arange(len(embeddings)))].reshape(len(embeddings), neighbours)
    votes = np.zeros((len(embeddings), k))
    np.add.at(votes, (np.repeat(np.arange(len(embeddings)), neighbours), start[found].ravel()), 1)
    return votes.argmax(1)


def main(argv=None):
    import torch

    from raycluster.config import compose
    from raycluster.data.store import EmbeddingStore
    from raycluster.methods.diec.model import cell_embeddings, student_t_assignments
    from raycluster.methods.start import start_clusters

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="outputs/bench/quality/digits/diec/seed0/diec")
    parser.add_argument("--dataset", default="digits", choices=sorted(STORES))
    parser.add_argument("--prototypes", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--neighbours", type=int, nargs="+", default=[5, 15])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    store_path, image_shape, k = STORES[args.dataset]
    if not (work / "search" / "search.json").exists() or not Path(store_path).exists():
        parser.error(f"needs {work}/search/search.json and {store_path}: run bench/quality.py with diec on "
                     f"{args.dataset} first (--protocol transfer for digits)")
    cell = json.loads((work / "search" / "search.json").read_text())
    method = compose(["experiment=diec_mnist"]).method
    rows = EmbeddingStore(store_path).load()
    _, embeddings, _ = cell_embeddings({"n_clusters": k, "unet": str(work / "pretrained"), "image_shape": image_shape,
                                        "layer": cell["layer"], "timestep": cell["timestep"],
                                        "pool": method["model"]["pool"], "eval_draws": method["model"]["eval_draws"]},
                                       rows.vectors, 0)
    centers, start, _ = start_clusters(embeddings, k, 0, dict(method["manifold"]))
    nearest = student_t_assignments(torch.from_numpy(embeddings), torch.from_numpy(centers)).argmax(1).numpy()
    results = [("start (UMAP + k-means)", start), ("nearest centre", nearest)]
    results += [(f"{m} prototypes a cluster", prototype_assignments(embeddings, start, k, m)) for m in args.prototypes]
    results += [(f"k-NN vote, k={n}", knn_vote(embeddings, start, k, n)) for n in args.neighbours]
    table = [{"bench": "diec_output", "dataset": args.dataset, "cell": f"{cell['layer']} t={cell['timestep']}",
              "output": name, **{key: round(value, 4) for key, value in cluster_scores(rows.labels, clusters, start).items()}}
             for name, clusters in results]
    print(f"{'output':<28}{'ACC':>8}{'agree':>8}")
    for row in table:
        print(f"{row['output']:<28}{row['acc']:>8.4f}{row['agree_with_start']:>8.4f}")
    append_json_rows(args.json, table)
    return table


if __name__ == "__main__":
    main()
