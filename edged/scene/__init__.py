"""What a camera's answers mean over time: views (the frame and its regions), the motion gate, debounced states
and events. Plain numpy/OpenCV logic: frames and predictions in, decisions out; no MQTT, no disk."""
