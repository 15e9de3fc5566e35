"""The one error type the command line turns into a one-line message (exit status 2), and the
first line of an exception such a message quotes."""


class SpgnetError(Exception):
    """Bad input or configuration: the message names the file, key or value at fault."""


def first_line(err: BaseException) -> str:
    """``Type: first line of the message`` of an exception (just ``Type`` when it has none), for
    the one-line errors that quote one."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
