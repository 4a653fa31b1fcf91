"""The base class of the errors a user causes and can fix (a bad config, dataset, checkpoint, sweep or
weights file): the entry points' console (`console.user_errors_as_one_line`) ends the program with its
message on one line instead of a traceback. Every other exception is a bug, and keeps its traceback."""


class UserError(Exception):
    """An error whose message names the problem and the fix; the console prints it as one line."""
