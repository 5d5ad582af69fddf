"""gasops opcua package."""
