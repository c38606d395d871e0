"""The control plane: unix sockets (status, the `wg` UAPI) and Prometheus metrics."""
