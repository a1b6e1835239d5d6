"""Meterline: usage-based billing on the Python standard library."""

__version__ = "0.1.0"
