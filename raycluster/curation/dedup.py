"""Near-duplicate removal within clusters (NeMo Curator's SemDeDup route) with a copy-detection score.

Search. Each row is compared with the rows of its `probes` clusters: its own (the run's level-1
cluster) and the nearest other cluster means. With one cluster a pair split by a boundary is
lost (bench/README.md, curation: clusters_1probe against clusters_2probe).
Cost: sum over clusters of (rows searched there)^2 x D, never N^2; each cluster is one Ray Data
group (`groupby(...).map_groups`) that fits one worker, its matmuls on a GPU with `use_gpu`.

Score. Cosine of PCA-whitened descriptors (`whiten`, fitted on a sample: the few directions every
photo shares say nothing about copies, the many faint ones do) minus the pair's background, the
larger of the two rows' cosines to their `background_rank`-th nearest row in the searched
cluster (SSCD's score normalisation, Pizzi et al. 2022). A copy stands out from its neighbourhood; a dense
neighbourhood alone does not make a duplicate. background_rank 0 scores by plain cosine.
A group of `background_rank` or more copies of one image raises its own background; pairs whose
whitened cosine reaches `same_image` are duplicates whatever their background, so such a group
is still found unless its copies are edited below that cosine.

Groups are stars, not connected components: the row with the most duplicates (`keep=central`) or
the earliest key (`keep=earliest`) is kept and takes every not-yet-grouped row paired with it;
repeat. Connected components chain (a ~ b ~ c without a ~ c): on Tiny-ImageNet with injected
copies they merged thousands of distinct photos into a few groups. Pairs found in any cluster are
grouped together, in one place: that costs O(duplicate pairs), not O(rows).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from raycluster.data.postprocess import Postprocess
from raycluster.data.store import unit_rows

BLOCK_ROWS = 4096


@dataclass
class DedupConfig:
    threshold: float = 0.25    # pair score (see the module docstring) at or above which two images are duplicates
    keep: str = "central"      # central: the row with the most duplicates | earliest: the smallest key
    probes: int = 2            # clusters each row is searched in: its own and the nearest others
    background_rank: int = 5   # the score subtracts the cosine to this nearest neighbour; 0: plain cosine
    same_image: float = 0.8    # whitened cosine at or above which a pair is a duplicate whatever its background
    whiten: float = 0.99       # PCA-whiten the components that explain this share of the variance; 0: no whitening
    sample_rows: int = 100_000
    max_cluster_rows: int = 200_000   # rows searched in one cluster; more is an error (one worker's matmul)
    use_gpu: bool = False      # each cluster's Ray Data task takes a GPU (the matmuls run there)

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"dedup: threshold must be in (0, 1], got {self.threshold}")
        if self.keep not in ("central", "earliest"):
            raise ValueError(f"dedup: keep must be central or earliest, got {self.keep!r}")
        if self.probes < 1:
            raise ValueError(f"dedup: probes must be >= 1, got {self.probes}")
        if not 0.0 < self.same_image <= 1.0:
            raise ValueError(f"dedup: same_image must be in (0, 1], got {self.same_image}")
        if not 0.0 <= self.whiten < 1.0:
            raise ValueError(f"dedup: whiten must be in [0, 1), got {self.whiten}")
        if self.background_rank < 0:
            raise ValueError(f"dedup: background_rank must be >= 0, got {self.background_rank}")


def fit_whitener(sample: np.ndarray, config: DedupConfig, seed: int = 0) -> Postprocess:
    """(n, D) sample -> the transform applied before the cosine: PCA-whitening of the components
    that explain `config.whiten` of the variance (the rest is noise that whitening would blow up
    to the size of the signal), then unit length; unit length alone when whiten is 0."""
    if not config.whiten:
        return Postprocess(l2_normalize=True)
    return Postprocess.fit(sample, config.whiten, True, seed, whiten=True)


def _on_device(array: np.ndarray):
    """A float32 torch tensor on the GPU when this process sees one, else on the CPU: one code
    path for both (the CPU tests run the code a GPU worker runs)."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


def cluster_candidates(unit: np.ndarray, config: DedupConfig, block: int = BLOCK_ROWS) -> tuple:
    """(n, D) unit rows searched together -> background (n,) float32 (each row's cosine to its
    `background_rank`-th nearest other row here; the farthest when n - 1 is fewer; 0 for rank 0)
    and candidate pairs (i, j) int64, i < j, with their cosine float32: those whose cosine
    reaches the threshold above row i's background, or `same_image`. `final_pairs` then tests
    against the larger of both rows' backgrounds over every cluster they were searched in, which
    only lowers scores: the candidates are a superset. One blocked matmul pass, O(block x n)
    memory, on the GPU when present."""
    import torch

    n = len(unit)
    if n < 2:
        return np.zeros(n, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    rank = min(config.background_rank, n - 1)
    rows = _on_device(unit)
    bg, found = rows.new_zeros(n), []
    for start in range(0, n, block):
        sims = rows[start:start + block] @ rows.T
        own = torch.arange(len(sims), device=sims.device)
        sims[own, own + start] = -float("inf")
        if rank:
            bg[start:start + len(sims)] = sims.topk(rank, dim=1).values[:, -1]
        floor = bg[start:start + len(sims), None] + config.threshold
        i, j = torch.nonzero((sims >= floor - 1e-6) | (sims >= config.same_image - 1e-6), as_tuple=True)
        upper = i + start < j
        i, j = i[upper], j[upper]
        found.append((i + start, j, sims[i, j]))
    i, j, cosine = (torch.cat(parts).cpu().numpy() for parts in zip(*found))
    return bg.cpu().numpy(), i.astype(np.int64), j.astype(np.int64), cosine.astype(np.float32)


def final_pairs(i: np.ndarray, j: np.ndarray, cosine: np.ndarray, bg: np.ndarray, config: DedupConfig) -> np.ndarray:
    """Candidate pairs (i, j) with their cosine, and each row's background (its largest over the
    clusters it was searched in) -> (m, 2) int64 unique pairs scoring at or above the threshold,
    or with a cosine at or above `same_image`."""
    keep = ((cosine - np.maximum(bg[i], bg[j]) >= config.threshold - 1e-6) | (cosine >= config.same_image - 1e-6))
    pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)[keep]
    return np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)


def star_groups(keys: np.ndarray, i: np.ndarray, j: np.ndarray, keep: str) -> tuple[np.ndarray, np.ndarray]:
    """keys (n,) and duplicate pairs (i, j) of row indices -> group (n,) int64 (the kept row's
    index, -1: no duplicate) and kept (n,) bool; star groups (see the module docstring)."""
    from scipy.sparse import coo_matrix

    n = len(keys)
    group, kept = np.full(n, -1, np.int64), np.ones(n, bool)
    if not len(i):
        return group, kept
    graph = coo_matrix((np.ones(2 * len(i)), (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    degree = np.diff(graph.indptr)
    candidates = np.flatnonzero(degree)
    if keep == "earliest":
        candidates = candidates[np.argsort(np.asarray(keys, dtype=object)[candidates], kind="stable")]
    else:   # the row with the most duplicates first: the centre of its group
        candidates = candidates[np.argsort(-degree[candidates], kind="stable")]
    for row in candidates:
        if group[row] >= 0:
            continue
        members = graph.indices[graph.indptr[row]:graph.indptr[row + 1]]
        members = members[group[members] < 0]
        if not len(members):
            continue
        group[row] = group[members] = row
        kept[members] = False
    return group, kept


def probe_clusters(vectors: np.ndarray, home: np.ndarray, means: np.ndarray, probes: int) -> np.ndarray:
    """(n, D) rows, (n,) home cluster, (K, D) cluster means -> (n, min(probes, K)) int64: the
    home cluster first, then the other clusters by cosine of the row to their mean."""
    probes = min(probes, len(means))
    if probes == 1:
        return np.asarray(home, np.int64)[:, None]
    sims = unit_rows(np.asarray(vectors, np.float32)) @ unit_rows(means).T
    sims[np.arange(len(sims)), home] = np.inf
    top = np.argpartition(-sims, probes - 1, axis=1)[:, :probes]   # O(K) a row, not a sort of all K
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1).astype(np.int64)


def dedup_table(keys: np.ndarray, probes: np.ndarray, vectors: np.ndarray, config: DedupConfig) -> dict:
    """In memory: rows, their (n, p) probed clusters (home first; (n,) for one cluster each) and
    whitened (n, D) vectors -> {"key", "cluster" (home), "group", "kept"}."""
    probes = np.asarray(probes, np.int64).reshape(len(keys), -1)
    unit = unit_rows(np.asarray(vectors, np.float32))
    bg = np.full(len(keys), -np.inf, np.float32)
    i, j, cosine = [], [], []
    for cluster in np.unique(probes):
        members = np.flatnonzero((probes == cluster).any(axis=1))
        check_cluster_rows(len(members), config)
        found_bg, a, b, cos = cluster_candidates(unit[members], config)
        bg[members] = np.maximum(bg[members], found_bg)
        i.append(members[a]), j.append(members[b]), cosine.append(cos)
    pairs = final_pairs(np.concatenate(i), np.concatenate(j), np.concatenate(cosine), bg, config)
    group, kept = star_groups(np.asarray(keys, dtype=object), pairs[:, 0], pairs[:, 1], config.keep)
    return {"key": np.asarray(keys, dtype=object), "cluster": probes[:, 0], "group": group, "kept": kept}


def check_cluster_rows(n: int, config: DedupConfig) -> None:
    if n > config.max_cluster_rows:
        raise ValueError(f"dedup: a cluster of {n} rows exceeds max_cluster_rows={config.max_cluster_rows}; "
                         "cluster with a larger k first")


# -- over a store, with Ray Data ---------------------------------------------------------------
def _cluster_sums(keys, labels, vectors, method) -> dict:
    """StoreRows.map: one batch -> per-cluster sums (k, D) and counts of its rows."""
    home, _ = method.predict(vectors)
    clusters, inverse = np.unique(home, return_inverse=True)
    sums = np.zeros((len(clusters), vectors.shape[1]), np.float64)
    np.add.at(sums, inverse, vectors)
    return {"cluster": clusters.astype(np.int64), "sum": sums, "count": np.bincount(inverse).astype(np.int64)}


def cluster_means(method, rows) -> np.ndarray:
    """(K, D) float32 mean of the post-processed rows of each cluster (zeros for an empty one);
    one streamed pass, O(K x D) in the caller."""
    sums, counts = np.zeros((method.n_clusters, rows.dim)), np.zeros(method.n_clusters)
    for batch in rows.map(_cluster_sums, {"method": method}):
        np.add.at(sums, batch["cluster"], np.asarray(batch["sum"]))
        np.add.at(counts, batch["cluster"], batch["count"])
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def _probe_rows(keys, labels, vectors, method, means, whitener, probes) -> dict:
    """StoreRows.map: one batch -> a row per (row, probed cluster): key, cluster, home (bool), whitened vector."""
    home, _ = method.predict(vectors)
    probed = probe_clusters(vectors, home, means, probes)
    width = probed.shape[1]
    return {"key": np.repeat(np.asarray(keys, dtype=object), width), "cluster": probed.ravel(),
            "home": np.tile(np.arange(width) == 0, len(keys)), "vectors": np.repeat(whitener(vectors), width, axis=0)}


def _pairs_of_group(batch: dict, config: DedupConfig) -> dict:
    """map_groups: the rows searched in one cluster -> a record per row (partner "": its
    background here, and whether this is its home cluster) and a record per candidate pair
    (key, partner, cosine)."""
    keys = np.asarray(batch["key"], dtype=object)
    check_cluster_rows(len(keys), config)
    bg, i, j, cosine = cluster_candidates(unit_rows(np.asarray(batch["vectors"], np.float32)), config)
    n, m = len(keys), len(i)
    return {"key": np.r_[keys, keys[i]], "partner": np.r_[np.full(n, "", dtype=object), keys[j]],
            "cluster": np.full(n + m, int(batch["cluster"][0]), np.int64),
            "home": np.r_[np.asarray(batch["home"], bool), np.zeros(m, bool)],
            "background": np.r_[bg, np.full(m, np.nan, np.float32)], "cosine": np.r_[np.full(n, np.nan, np.float32), cosine]}


def duplicate_records(method, rows, config: DedupConfig) -> Iterator[dict]:
    """Yield batches of `_pairs_of_group` records over a StoreRows: a record per (row, cluster it
    is searched in) and per candidate pair (a pair can come from two clusters). In-process for a
    small store, Ray Data otherwise."""
    whitener = fit_whitener(rows.sample(config.sample_rows).vectors, config)
    means = cluster_means(method, rows)
    kwargs = {"method": method, "means": means, "whitener": whitener, "probes": config.probes}
    if rows.local:
        probed = list(rows.map(_probe_rows, kwargs))
        table = {name: np.concatenate([p[name] for p in probed]) for name in probed[0]}
        for cluster in np.unique(table["cluster"]):
            at = table["cluster"] == cluster
            yield _pairs_of_group({name: column[at] for name, column in table.items()}, config)
        return
    dataset = rows.dataset(_probe_rows, kwargs).groupby("cluster").map_groups(
        _pairs_of_group, fn_kwargs={"config": config}, batch_format="numpy", num_gpus=1 if config.use_gpu else 0)
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy")


def dedup_store(method, rows, config: DedupConfig, records_path: str) -> Iterator[dict]:
    """Yield {"key", "cluster", "group", "kept"} batches over every row of a StoreRows. The rows'
    records (key, cluster, home, background) go to a Parquet file at records_path as they come,
    the candidate pairs stay in memory (O(pairs)). Once every cluster is done, one pass over the
    records gives each paired row its largest background, the pairs are scored and grouped, and a
    last pass yields every row at home with its group."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = pa.schema([("key", pa.string()), ("cluster", pa.int64()), ("home", pa.bool_()), ("background", pa.float32())])
    pairs_a, pairs_b, cosines = [], [], []
    with pq.ParquetWriter(records_path, schema) as writer:
        for batch in duplicate_records(method, rows, config):
            is_record = np.asarray(batch["partner"], dtype=object) == ""
            keys = np.asarray(batch["key"], dtype=object)
            writer.write_table(pa.table({"key": pa.array(list(keys[is_record]), pa.string()),
                                         "cluster": pa.array(np.asarray(batch["cluster"])[is_record], pa.int64()),
                                         "home": pa.array(np.asarray(batch["home"], bool)[is_record]),
                                         "background": pa.array(np.asarray(batch["background"], np.float32)[is_record])}))
            pairs_a.append(keys[~is_record])
            pairs_b.append(np.asarray(batch["partner"], dtype=object)[~is_record])
            cosines.append(np.asarray(batch["cosine"], np.float32)[~is_record])
    paired, inverse = np.unique(np.concatenate(pairs_a + pairs_b).astype(str), return_inverse=True)
    paired = pa.array(paired, pa.string())
    bg = np.full(len(paired), -np.inf, np.float32)
    records = pq.ParquetFile(records_path)
    for batch in records.iter_batches(BLOCK_ROWS * 16, columns=["key", "background"]):
        at = pc.index_in(batch.column("key"), value_set=paired).fill_null(-1).to_numpy().astype(np.int64)
        found = at >= 0
        np.maximum.at(bg, at[found], batch.column("background").to_numpy()[found])
    i, j = inverse.reshape(2, -1) if len(inverse) else (np.zeros(0, np.int64),) * 2
    pairs = final_pairs(i, j, np.concatenate(cosines), bg, config)
    group, kept = star_groups(np.asarray(paired.to_pylist(), dtype=object), pairs[:, 0], pairs[:, 1], config.keep)
    for batch in records.iter_batches(BLOCK_ROWS * 16, columns=["key", "cluster", "home"]):
        batch = batch.filter(batch.column("home"))
        at = pc.index_in(batch.column("key"), value_set=paired).fill_null(-1).to_numpy().astype(np.int64)
        found, at = at >= 0, np.maximum(at, 0)
        yield {"key": np.asarray(batch.column("key").to_pylist(), dtype=object), "cluster": batch.column("cluster").to_numpy(),
               "group": np.where(found, group[at], -1), "kept": np.where(found, kept[at], True)}
