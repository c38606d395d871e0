"""The peer registry: the store, address allocation, client configs, the sync into the server."""
