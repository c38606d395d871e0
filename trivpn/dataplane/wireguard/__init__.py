"""The WireGuard front: the sans-IO device bound to its socket, the router and the TUN."""
