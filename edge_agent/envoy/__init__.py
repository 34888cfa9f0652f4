"""Envoy: bootstrap generation from the config, and process supervision."""
