"""Thin click commands over the library API; see main.py for how they are found."""
