"""The command layer: validated command payloads (schema), the dispatcher that runs them for MQTT, the CLI and the
teach page, and the handlers behind every command name."""
