"""Ray Tune searches scored without labels: DiEC's (layer, timestep) grid (`layer_timestep`),
CLUDI's hyperparameters under ASHA (`asha`); `run` is jobs/tune.py."""
