"""The two ways a farm run can go wrong, so that callers can word them for users."""


class BadInput(Exception):
    """The user gave something the farm cannot use; the message says what and what to do."""


class FarmFailure(Exception):
    """The input was fine but the farm could not finish (failed tiles, a dead backend...)."""
