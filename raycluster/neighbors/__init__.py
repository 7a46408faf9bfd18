"""Sharded FAISS neighbourhoods: index specs (index.py), shards on Ray actors (sharded.py), the
k-NN graph job (graph.py, run.py)."""
