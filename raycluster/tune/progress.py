"""One log line per finished Ray Tune trial, in place of Tune's periodic trial tables."""
from __future__ import annotations

import logging

log = logging.getLogger("raycluster.tune")


def trial_lines(total: int, config_keys: list[str], metric_keys: list[str]):
    """A `ray.tune.Callback` that logs `trial i/total <config>: <metrics>` when a trial ends
    (completed, stopped early by a scheduler, or failed)."""
    import ray.tune

    class TrialLines(ray.tune.Callback):
        def __init__(self):
            self.done = 0

        def _line(self, trial, how: str) -> None:
            self.done += 1
            settings = " ".join(f"{key}={trial.config.get(key)}" for key in config_keys)
            result = trial.last_result or {}
            scores = " ".join(f"{key} {result[key]:.4g}" for key in metric_keys
                              if isinstance(result.get(key), (int, float)))
            log.info("trial %d/%d %s: %s%s", self.done, total, settings, scores, "" if how == "done" else f" ({how})")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._line(trial, "done")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "failed")

    return TrialLines()
