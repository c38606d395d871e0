"""The server process: the supervising nursery, reload, the key file, kernel routes."""
