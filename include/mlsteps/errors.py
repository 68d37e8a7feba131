"""The one exception type whose message is meant for people, not for debugging."""


class StepError(Exception):
    """A failure with a one-sentence reason: what was wrong, where, and what to do.

    Raised for bad input, bad config or a refused action. The CLI prints the message alone
    on stderr and exits with ``EXIT_USER_ERROR``, which the task factory treats as not worth
    retrying.
    """


EXIT_USER_ERROR = 2
EXIT_CRASH = 1
