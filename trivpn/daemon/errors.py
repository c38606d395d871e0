"""The server's one start-up error, apart from the server's imports: `trivpn check` raises it
too, and loads neither trio nor the data plane (issue 13)."""


class ServerError(Exception):
    """Start-up failed for a reason the operator can fix; the message says which."""
