"""The serve path: the daemon's wiring, frame loop, command layer, capture, learning in process, telemetry, sd_notify.

Never imports TensorFlow: Keras work crosses into `edged.learn` only through the worker process.
"""
