"""Devices that share one broker: sharing models, head versions and examples as signed parcels, sending TensorFlow
jobs to a trainer node, and the trainer node itself (a process role of its own)."""
