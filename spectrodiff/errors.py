"""The one exception type the CLI turns into a one-line message."""


class SpectrodiffError(Exception):
    """A problem with the user's input or files, worded for the user (no traceback is shown)."""
