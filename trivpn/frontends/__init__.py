"""Protocol fronts: each binds a sans-IO protocol to a UDP socket, the router and the TUN."""
