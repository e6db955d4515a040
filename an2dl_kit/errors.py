"""The kit's exception types.

Every problem a user can fix (a bad input file, an invalid submission, a refused Kaggle request) raises a
`KitError` whose message is one line that names the file or the request and the problem. The CLI prints that
line without a traceback and exits with status 2.
"""


class KitError(Exception):
    """A problem the user can fix, described in one line."""


class DataError(KitError):
    """A competition input file is missing, unreadable or malformed."""


class SubmissionError(KitError):
    """A leaderboard file does not match the competition's format."""


class KaggleError(KitError):
    """The Kaggle API refused or failed a request."""
