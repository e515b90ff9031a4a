"""enoc: enterprise network operations monitoring."""

__version__ = "0.1.0"
