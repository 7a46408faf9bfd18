"""raycluster: diffusion-based deep clustering of image corpora on Ray.

Pipeline: WebDataset shards -> Ray Data feature extraction -> Parquet embedding store ->
clustering method -> assignments Parquet. See README.md for the map of modules.
"""

__version__ = "0.1.0"
