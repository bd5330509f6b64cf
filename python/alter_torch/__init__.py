"""ALTER in PyTorch: the same method and files as `alter compress` (see python/README.md)."""
