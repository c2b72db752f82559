"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class RetabError(Exception):
    """Bad input or a failed precondition; the message names the file and what is wrong."""
