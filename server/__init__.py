"""gasops server package."""
