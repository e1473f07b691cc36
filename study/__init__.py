"""Study specs, search spaces, running/resuming studies and the `study` CLI."""
__version__ = "0.1.0"
