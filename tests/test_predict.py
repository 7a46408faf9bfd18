"""jobs/predict.py: the saved method as a Ray Data actor reproduces the training assignments."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from raycluster.data.store import EmbeddingStore, EmbeddingWidthError


@pytest.mark.slow
def test_predict_reproduces_train_assignments_and_checks_width(tmp_path, compose_config, ray_local):
    from raycluster.app.pipeline import run_train
    from raycluster.app.predict import run_predict

    cfg = compose_config(["method.n_init=2"])
    summary = run_train(cfg)
    result = run_predict(cfg.output_dir, batch_size=500)
    assert result["rows"] == 1797
    trained = pq.read_table(summary["outputs"]["assignments"]).to_pandas()
    predicted = pq.read_table(result["output"]).to_pandas()
    assert predicted["key"].tolist() == trained["key"].tolist()
    assert np.array_equal(predicted["cluster"], trained["cluster"])
    assert np.allclose(predicted["confidence"], trained["confidence"], atol=1e-5)

    other = EmbeddingStore(str(tmp_path / "other"))
    other.write_part("x", ["a", "b"], [0, 0], np.zeros((2, 32), np.float32), from_shard=False)
    with pytest.raises(EmbeddingWidthError, match="width 32"):
        run_predict(cfg.output_dir, embeddings_dir=other.root)
    with pytest.raises(FileNotFoundError, match="summary.json"):
        run_predict(str(tmp_path / "nowhere"))
