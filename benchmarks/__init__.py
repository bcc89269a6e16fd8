"""Benchmarks of the pyaccel_nas ops against eager and torch.compile'd PyTorch (see benchmarks/NOTES.md)."""
