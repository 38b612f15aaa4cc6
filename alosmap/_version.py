"""Version of the alosmap package."""

__version__ = "0.1.0"
