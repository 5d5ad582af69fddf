"""Device drivers: one module per protocol, behind `realtime.drivers.base.Driver`."""
