"""The one exception type for bad user input.

The CLI turns an :class:`UnlearnInputError` into a single line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class UnlearnInputError(ValueError):
    """Bad input from the user: unknown token, malformed file, unknown unlearner name, ..."""
