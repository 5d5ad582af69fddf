"""gasops twin_jax package."""
