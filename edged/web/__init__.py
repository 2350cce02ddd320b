"""The teach page served by the daemon (optional: pip install 'edged[web]'). Calls the serve command layer only."""
