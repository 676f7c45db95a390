"""The version of tunewise (the package and every record it writes say it)."""

__version__ = "0.1.0"
