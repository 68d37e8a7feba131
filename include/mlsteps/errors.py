"""The one exception type whose message is meant for people, not for debugging."""

from typing import Any


class StepError(Exception):
    """A failure with a one-sentence reason: what was wrong, where, and what to do.

    Raised for bad input, bad config or a refused action. The CLI prints the message alone
    on stderr and exits with ``EXIT_USER_ERROR``, which the task factory treats as not worth
    retrying.

    ``result`` is what the step still has to show for itself (e.g. the URI of the report that
    explains a failed validation): the CLI writes it as the failed step's result, with the reason.
    """

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = dict(result or {})


EXIT_USER_ERROR = 2
EXIT_CRASH = 1
