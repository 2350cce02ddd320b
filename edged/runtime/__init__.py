"""Running TFLite models: interpreter choice (LiteRT -> tflite_runtime -> tf.lite), delegates, exported models."""
