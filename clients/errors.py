"""The exceptions the DVN clients raise.

Every error the server reports (docs/api.md: ``{"error": {"type", "message"}}``) becomes
the subclass registered for its ``type``, carrying the server's message unchanged; a type
this client does not know becomes :class:`DVNError` itself. Failures on the client's side
of the wire have their own subclasses, so ``except DVNError`` catches everything a call
can fail with except bad arguments (``TypeError``/``ValueError``/``FileNotFoundError``).

    DVNError
    ├── InvalidInputError           400 invalid_input
    ├── UnauthorizedError           401 unauthorized
    ├── ForbiddenError              403 forbidden
    ├── UnknownTaskError            404 unknown_task
    ├── NotFoundError               404 not_found
    ├── MethodNotAllowedError       405 method_not_allowed
    ├── PayloadTooLargeError        413 payload_too_large
    ├── UnsupportedMediaTypeError   415 unsupported_media_type
    ├── InvalidBudgetError          422 invalid_budget
    ├── BudgetUnsatisfiableError    422 budget_unsatisfiable
    ├── InvalidParameterError       422 invalid_parameter
    ├── QueueFullError              429 queue_full            (retry_after set)
    ├── InferenceFailedError        500 inference_failed
    ├── DeadlineUnmeetableError     503 deadline_unmeetable   (retry_after set)
    ├── NotReadyError               503 not_ready             (retry_after set)
    ├── DeadlineExceededError       504 deadline_exceeded
    ├── ConnectionFailedError       no response: connect/read/write failed   (type "connection")
    ├── RequestTimeoutError         no response within the client's timeout  (type "timeout")
    ├── InvalidResponseError        a response that breaks the documented contract
    └── ArchiveError                an export archive failed verification or is unsafe
"""

from __future__ import annotations


class DVNError(Exception):
    """A call to a DVN server failed.

    Attributes:
        message: the server's message (or, for client-side failures, what went wrong).
        status: the HTTP status, ``None`` when no response came back.
        type: the server's ``error.type`` (``None`` when the response had no error body).
        request_id: the server's ``X-Request-ID`` for the failed request, when known.
        retry_after: seconds the server asked to wait (``Retry-After``), when given.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        type: str | None = None,
        request_id: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.request_id = request_id
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status={self.status!r}, "
            f"type={self.type!r}, request_id={self.request_id!r})"
        )


class InvalidInputError(DVNError):
    """400: the body could not be decoded or has the wrong shape, dtype or values."""


class UnauthorizedError(DVNError):
    """401: the server requires an API key and none was sent."""


class ForbiddenError(DVNError):
    """403: the API key is wrong."""


class UnknownTaskError(DVNError):
    """404: no such task (the message lists the tasks)."""


class NotFoundError(DVNError):
    """404: no such route (often a wrong base URL)."""


class MethodNotAllowedError(DVNError):
    """405: wrong HTTP method for the route."""


class PayloadTooLargeError(DVNError):
    """413: the body is over the server's ``max_body_bytes``."""


class UnsupportedMediaTypeError(DVNError):
    """415: the content type is not JSON, ``.npy``, PNG or JPEG."""


class InvalidBudgetError(DVNError):
    """422: the budget does not parse (unit, number, repeated kind)."""


class BudgetUnsatisfiableError(DVNError):
    """422: the memory budget is below the smallest level (the message names its size)."""


class InvalidParameterError(DVNError):
    """422: ``level`` out of range, ``on_miss`` unknown or a bad ``top_k``."""


class QueueFullError(DVNError):
    """429: every queue the budget allows is full; retry after ``retry_after``."""


class InferenceFailedError(DVNError):
    """500: the batch this request was in failed."""


class DeadlineUnmeetableError(DVNError):
    """503: no level can meet the latency budget and ``on_miss=reject`` was asked for."""


class NotReadyError(DVNError):
    """503: the server is warming up or draining."""


class DeadlineExceededError(DVNError):
    """504: the deadline passed while the request was queued (``on_miss=reject``)."""


class ConnectionFailedError(DVNError):
    """No response: the connection could not be made or broke (type ``connection``)."""


class RequestTimeoutError(DVNError):
    """No response within the client's timeout (type ``timeout``)."""


class InvalidResponseError(DVNError):
    """The server answered something the documented contract does not allow."""


class ArchiveError(DVNError):
    """An export archive's checksum does not match or it holds an unsafe member."""


ERROR_TYPES: dict[str, type[DVNError]] = {
    "invalid_input": InvalidInputError,
    "unauthorized": UnauthorizedError,
    "forbidden": ForbiddenError,
    "unknown_task": UnknownTaskError,
    "not_found": NotFoundError,
    "method_not_allowed": MethodNotAllowedError,
    "payload_too_large": PayloadTooLargeError,
    "unsupported_media_type": UnsupportedMediaTypeError,
    "invalid_budget": InvalidBudgetError,
    "budget_unsatisfiable": BudgetUnsatisfiableError,
    "invalid_parameter": InvalidParameterError,
    "queue_full": QueueFullError,
    "inference_failed": InferenceFailedError,
    "deadline_unmeetable": DeadlineUnmeetableError,
    "not_ready": NotReadyError,
    "deadline_exceeded": DeadlineExceededError,
}


def error_for(
    type: str | None,
    message: str,
    status: int | None,
    request_id: str | None = None,
    *,
    retry_after: float | None = None,
) -> DVNError:
    """The exception for a server error of ``type``; :class:`DVNError` for unknown types."""
    cls = ERROR_TYPES.get(type or "", DVNError)
    return cls(message, status, type, request_id, retry_after=retry_after)
