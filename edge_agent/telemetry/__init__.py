"""Metrics (Prometheus), traces (OpenTelemetry), logs, and what each request tells."""
