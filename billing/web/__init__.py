"""HTTP only: requests, responses, routing, errors, static files."""
