"""The one error type that means "the user's input is wrong"."""


class InputError(ValueError):
    """Bad input from the user: an unknown name, a malformed file, a clash.

    The command line prints its message as one line on stderr and exits with
    code 2; nothing has been written or deleted when it is raised.
    """
