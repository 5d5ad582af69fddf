"""Physical laws of the twin: gas properties, friction, branch residuals (one module per law)."""
