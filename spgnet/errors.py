"""The one error type the command line turns into a one-line message (exit status 2)."""


class SpgnetError(Exception):
    """Bad input or configuration: the message names the file, key or value at fault."""
