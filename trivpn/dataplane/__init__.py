"""The data plane: the route table, the TUN reader and the protocol fronts."""
