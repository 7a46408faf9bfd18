"""Training: a plain epoch loop (loop.py) and its Ray Train wiring (run.py)."""
