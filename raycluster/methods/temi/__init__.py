"""TEMI: `model.py` pure torch, `method.py` behind the method interface (Ray Train)."""
