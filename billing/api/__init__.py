"""One module per API resource: handlers and the SQL they need."""
