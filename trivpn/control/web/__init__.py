"""The web admin: its credentials (`credentials`), set up from the CLI before it serves."""
