"""gasops frontend package."""
