"""Metrics (Prometheus), logs; tracing comes later."""
