"""Cache tiers. Today: the exact tier in memory (semantic and Redis tiers come later)."""
