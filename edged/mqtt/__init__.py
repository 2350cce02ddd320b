"""MQTT: the paho 2.x link (topics, LWT, retained status, QoS, reconnect), command replies, a local broker."""
