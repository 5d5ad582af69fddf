"""gasops schema package."""
