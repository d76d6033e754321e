"""The one error the data layer raises for bad user data.

``DataError`` subclasses ``ValueError`` so callers that already treat bad input as a
``ValueError`` keep working. Its message names the file (when there is one), says what is
wrong with it and how to fix it.
"""

from __future__ import annotations


class DataError(ValueError):
    """A dataset on disk is missing, malformed or unsafe; the message says how to fix it."""
