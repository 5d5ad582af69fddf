"""gasops realtime package."""
