"""Clustering methods behind one interface (methods/base.py)."""
