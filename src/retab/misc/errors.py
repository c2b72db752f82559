"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class RetabError(Exception):
    """Bad input or a failed precondition; the message names the file and what is wrong."""


def one_line(exc: BaseException) -> str:
    """The message of `exc` on one line. A RetabError raised in a DataLoader worker comes back
    wrapped in the worker's whole traceback, whose last line holds the original message."""
    text = str(exc).strip()
    if "\nOriginal Traceback" in text:
        last = text.splitlines()[-1]
        prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
        text = last[len(prefix):] if last.startswith(prefix) else last
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
