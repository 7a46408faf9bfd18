"""Hierarchical k-means (`method.py`)."""
