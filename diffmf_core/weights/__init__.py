"""Shipped default weights (safetensors with the model config in its metadata)."""
