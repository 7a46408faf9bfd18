"""raycluster.train.loop: the schedule settings every torch method shares."""
import pytest

from raycluster.train.loop import OptimConfig, epochs_for


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
