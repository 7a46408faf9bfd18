"""Ray Tune searches: DiEC's (layer, timestep) grid (`layer_timestep`), scored without labels."""
