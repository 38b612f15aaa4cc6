"""Training (``alosmap.train``): losses, datasets, finetuning, pretraining."""
