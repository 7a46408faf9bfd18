"""DiEC: `model.py` pure torch, `method.py` pretrain -> search -> fine-tune."""
