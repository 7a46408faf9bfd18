"""Curation stages on a clustered corpus: balanced sampling (sampling.py), semantic deduplication (dedup.py)."""
