"""The serving daemon: assembles the store, backbone, heads, learning, commands, MQTT, fleet and source into one
process, starts them in order and stops them in reverse."""
