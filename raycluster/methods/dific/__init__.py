"""DiFiC: `model.py` pure torch, `method.py` warm-up -> clusters + k-NN graph -> guidance."""
