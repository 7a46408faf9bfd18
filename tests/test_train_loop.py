"""raycluster.train.loop: the schedule settings every torch method shares."""
import numpy as np
import pytest

from raycluster.train.loop import OptimConfig, PlateauStop, epochs_for


def test_a_schedule_in_steps_gives_a_smaller_dataset_more_epochs_and_the_same_updates():
    optim = OptimConfig(epochs=None, steps=1580, batch_size=128)
    assert epochs_for(optim, steps_per_epoch=79).epochs == 20     # 10,000 rows
    assert epochs_for(optim, steps_per_epoch=15).epochs == 106    # 1,797 rows: 1,590 updates, not 300
    assert epochs_for(optim, steps_per_epoch=15).steps is None
    assert epochs_for(OptimConfig(epochs=8), steps_per_epoch=15).epochs == 8   # no steps: epochs as given
    with pytest.raises(ValueError, match="positive number of optimizer steps"):
        OptimConfig(steps=0)
    with pytest.raises(ValueError, match="give epochs or steps"):
        OptimConfig(epochs=None)


def test_plateau_stop_fires_once_a_whole_window_passes_without_a_real_fall():
    stop = PlateauStop(every_steps=100, window_steps=300, tolerance=0.01)
    falling = [(100, 0.10), (200, 0.08), (300, 0.07), (400, 0.065), (500, 0.062)]
    assert not stop.reached(falling[:3])      # no evaluation a whole window back yet
    assert not stop.reached(falling)          # 0.08 at step 200 was beaten by 22% since
    flat = falling + [(600, 0.0619), (700, 0.0618), (800, 0.0621)]
    assert not stop.reached(flat[:6])         # step 300's 0.07 -> 0.0619: still learning
    assert stop.reached(flat)                 # step 500's 0.062 -> best 0.0618 since: < 1%
    assert stop.due(90, 105) and not stop.due(105, 190)
    # a dict from a config file becomes the dataclass, and bad values are one error
    assert OptimConfig(epochs=4, stop={"every_steps": 5, "window_steps": 10}).stop == PlateauStop(5, 10)
    with pytest.raises(ValueError, match="must span at least one evaluation"):
        PlateauStop(every_steps=100, window_steps=50)
    with pytest.raises(ValueError, match="tolerance"):
        PlateauStop(tolerance=1.5)


def test_hold_out_keeps_a_tenth_at_most_apart_from_training_in_row_order():
    rows = np.arange(50)[:, None] * np.ones((1, 3))
    trained, held_out = PlateauStop(held_out_rows=1000).hold_out(rows, seed=0)
    assert len(held_out) == 5 and len(trained) == 45                      # a tenth: held_out_rows is a ceiling
    assert sorted(set(trained[:, 0]) | set(held_out[:, 0])) == list(range(50))
    assert (np.diff(held_out[:, 0]) > 0).all() and (np.diff(trained[:, 0]) > 0).all()
    assert len(PlateauStop(held_out_rows=2).hold_out(rows, seed=0)[1]) == 2
    assert (PlateauStop().hold_out(rows, seed=0)[1] == held_out).all()   # the seed decides which
    with pytest.raises(ValueError, match="9 rows have none"):
        PlateauStop().hold_out(rows[:9], seed=0)
