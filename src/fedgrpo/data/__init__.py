"""Tasks, prompts and splits. Imports no torch, transformers, trl or flwr."""
