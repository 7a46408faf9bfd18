"""Static PNG figures for the report (matplotlib, Agg backend: no display, no network)."""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cluster_colors(n_clusters: int) -> np.ndarray:
    """(K, 4) RGBA colours; tab20 up to 20 clusters, then a shuffled HSV wheel so that
    neighbouring ids do not get neighbouring hues."""
    plt = _pyplot()
    if n_clusters <= 20:
        return plt.get_cmap("tab20")(np.arange(n_clusters) % 20)
    hues = np.random.default_rng(0).permutation(n_clusters) / n_clusters
    return plt.get_cmap("hsv")(hues)


def embed_2d(vectors: np.ndarray, method: str = "umap", seed: int = 0) -> tuple[np.ndarray, str]:
    """(M, D) -> ((M, 2) float32 coordinates, the method used). UMAP (umap-learn) when asked for
    and installed and M is large enough for its neighbour graph; PCA otherwise."""
    if method == "umap" and len(vectors) >= 50:
        import importlib.util

        if importlib.util.find_spec("umap") is None:
            log.warning("umap-learn is not installed; the map falls back to PCA")
        else:
            from raycluster.neighbors.manifold import umap_embedding

            return umap_embedding(vectors, 2, 15, 0.1, "euclidean", seed), "UMAP"
    elif method not in ("umap", "pca"):
        raise ValueError(f"map method must be 'umap' or 'pca', got {method!r}")
    from sklearn.decomposition import PCA

    if min(vectors.shape) < 2:
        return np.zeros((len(vectors), 2), np.float32), "none (fewer than 2 points or dims)"
    return PCA(2, random_state=seed).fit_transform(vectors).astype(np.float32), "PCA"


def map_png(path: str, coords: np.ndarray, cluster: np.ndarray, n_clusters: int, title: str) -> None:
    """Scatter of (M, 2) coordinates coloured by cluster; ids at cluster medians when K <= 60."""
    plt = _pyplot()
    colors = cluster_colors(n_clusters)
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    size = float(np.clip(20000 / max(len(coords), 1), 2, 30))
    ax.scatter(coords[:, 0], coords[:, 1], c=colors[cluster], s=size, linewidths=0, alpha=0.8)
    if n_clusters <= 60:
        for cid in np.unique(cluster):
            x, y = np.median(coords[cluster == cid], axis=0)
            ax.text(x, y, str(cid), fontsize=9, weight="bold", ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.7, lw=0))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    _save(fig, path)


def sizes_png(path: str, sizes: np.ndarray) -> None:
    """Bar chart of cluster sizes, largest first, with the balanced size as a line."""
    plt = _pyplot()
    order = np.argsort(-sizes, kind="stable")
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.bar(np.arange(len(sizes)), sizes[order], width=1.0, color="#4c72b0")
    ax.axhline(sizes.sum() / max(len(sizes), 1), color="#c44e52", lw=1, label="balanced")
    if len(sizes) <= 40:
        ax.set_xticks(np.arange(len(sizes)), [str(i) for i in order], fontsize=7)
    ax.set_xlabel("cluster (largest first)")
    ax.set_ylabel("members")
    ax.set_title("Cluster sizes")
    ax.legend(loc="upper right")
    _save(fig, path)


def confidence_png(path: str, counts: np.ndarray) -> None:
    """Histogram of assignment confidence from (B,) counts of equal-width bins over [0, 1]."""
    plt = _pyplot()
    counts = np.asarray(counts)
    edges = np.linspace(0.0, 1.0, len(counts) + 1)
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#55a868")
    ax.set_xlabel("confidence")
    ax.set_ylabel("rows")
    ax.set_title("Assignment confidence")
    _save(fig, path)


def contingency_png(path: str, table: np.ndarray, class_names: list[str]) -> None:
    """Heat map of a (K clusters, C classes) count table, rows normalised, classes reordered so
    each cluster's best-matching class (Hungarian) lies on the diagonal where possible."""
    from scipy.optimize import linear_sum_assignment

    plt = _pyplot()
    rows, cols = linear_sum_assignment(table, maximize=True)
    # matched (cluster, class) pairs on the diagonal, unmatched rows/columns after them
    row_order = list(rows) + sorted(set(range(table.shape[0])) - set(rows))
    col_order = list(cols) + sorted(set(range(table.shape[1])) - set(cols))
    shares = table[row_order][:, col_order] / np.maximum(table[row_order].sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    image = ax.imshow(shares, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_ylabel("cluster (matched order)")
    ax.set_xlabel("class (matched order)")
    if table.shape[0] <= 30:
        ax.set_yticks(np.arange(len(row_order)), [str(r) for r in row_order], fontsize=7)
    if table.shape[1] <= 30:
        ax.set_xticks(np.arange(len(col_order)), [class_names[c] for c in col_order], rotation=90, fontsize=7)
    ax.set_title("Cluster vs class (share of cluster)")
    fig.colorbar(image, ax=ax, fraction=0.04)
    _save(fig, path)


def _save(fig, path: str) -> None:
    plt = _pyplot()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def masks_png(path: str, images: np.ndarray, masks: np.ndarray, title: str) -> None:
    """A row of images (n, H, W) in [0, 1] over a row of their masks (n, H, W) in [0, 1] and a
    row of the images multiplied by the masks; written atomically."""
    import io

    from raycluster.io import atomic_write_bytes

    plt = _pyplot()
    count = len(images)
    fig, axes = plt.subplots(3, count, figsize=(1.2 * count, 3.9), dpi=100, squeeze=False)
    for column in range(count):
        for row, (picture, cmap) in enumerate([(images[column], "gray"), (masks[column], "magma"),
                                               (images[column] * masks[column], "gray")]):
            axes[row, column].imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            axes[row, column].axis("off")
    for row, label in enumerate(["image", "mask", "image x mask"]):
        axes[row, 0].set_title(label, fontsize=7, loc="left")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
