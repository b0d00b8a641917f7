"""What an operator sees inside a running gateway: Prometheus metrics (and, later, traces)."""
