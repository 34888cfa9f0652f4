"""Model → provider target resolution (strategies, health and failover grow here)."""
