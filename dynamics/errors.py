"""Errors the command line turns into exit statuses."""


class UsageError(Exception):
    """Bad input: an unknown name, a wrong type or value, an unreadable file.

    The message is one line naming the offending key or path; the CLI prints it
    and exits with status 2 before anything is written.
    """
