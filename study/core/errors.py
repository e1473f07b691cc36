"""Errors the CLI turns into exit status 2 (bad input), importable without torch."""


class DataError(ValueError):
    """Bad data: the message names the path and what is wrong with it."""


class WeightsUnavailable(RuntimeError):
    """ImageNet weights that cannot be loaded: the message names what was tried."""
