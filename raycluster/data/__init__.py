"""Data plane: sample sources, WebDataset shards, Ray Data readers, Parquet stores."""
