"""Documents rendered from billing data (pure: data in, bytes out)."""
