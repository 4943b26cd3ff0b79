"""The package version, in a module of its own so that anything may import it without
running the package's `__init__`."""
__version__ = "0.1.0"
