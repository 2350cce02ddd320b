"""Everything that imports TensorFlow/Keras: Keras backbones, training, fine-tuning, TFLite export, the worker process.

Nothing outside this package (and `edged.bench`) imports it; the serving process reaches it only
through the worker process (`python -m edged.learn.worker`) and the backbone builder
(`python -m edged.learn.backbones`).
"""
