"""gasops control package."""
