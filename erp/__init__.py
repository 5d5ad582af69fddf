"""gasops erp package."""
