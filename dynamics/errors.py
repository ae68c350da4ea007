"""Errors the command line turns into exit statuses (docs/reliability.md, "Exit status")."""

# Exit statuses of `icldyn`.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # a theory check failed
EXIT_USAGE = 2  # bad input, refused before any work, nothing written
EXIT_INCOMPLETE = 3  # results written, but a trajectory diverged or stalled
EXIT_OUTPUT = 4  # the output could not be written (disk full, unwritable, lock)
EXIT_INTERNAL = 70  # an unexpected error (a bug): one line, --debug shows the traceback
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE), silently


class UsageError(Exception):
    """Bad input: an unknown name, a wrong type or value, an unreadable file.

    The message is one line naming the offending key or path; the CLI prints it
    and exits with status 2 before anything is written.
    """


class OutputError(Exception):
    """An output that could not be written (no space, no permission, no lock).

    The message is one line naming the path and saying what was kept: the CLI
    prints it and exits with status 4. Earlier content of the file is intact.
    """
