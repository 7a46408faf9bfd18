"""k-means: FAISS (`method.py`), distributed Lloyd passes (`lloyd.py`), on a UMAP embedding (`umap.py`)."""
