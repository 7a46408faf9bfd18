"""k-NN graph of an embedding store with a sharded FAISS index on Ray actors.

    python jobs/neighbors.py                                        # digits pixels, IVF-Flat, k=10
    python jobs/neighbors.py neighbors=hnsw neighbors.shards=2 neighbors.k=50
    python jobs/neighbors.py data=tinyimagenet backbone=effnet_lite0 neighbors=exact
Writes <output_dir>/index/ (reused by later runs with the same settings) and
<output_dir>/knn_graph/part-*.parquet (key, neighbors, similarities); a rerun skips finished parts.
"""
from raycluster.app.cli import hydra_job
from raycluster.app.neighbors import run_neighbors

main = hydra_job(run_neighbors)

if __name__ == "__main__":
    main()
