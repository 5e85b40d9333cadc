"""The one exception type the readers and the store raise for bad input."""

__all__ = ["InputError", "input_error"]


class InputError(ValueError):
    """Bad input file or argument; the message is one line naming the file and the reason."""


def input_error(source, reason):
    """An :class:`InputError` whose one-line message is ``'<source>: <reason>'``.

    Examples
    --------
    >>> str(input_error("a.tif", "not a TIFF\\nfile"))
    'a.tif: not a TIFF file'
    """
    text = f"{source}: {reason}" if source is not None else str(reason)
    return InputError(" ".join(text.split()))
