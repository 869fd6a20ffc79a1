"""Domain errors, raised in the core and turned into HTTP responses only at the API edge."""

from __future__ import annotations


class MagorderError(Exception):
    """Base class of every error magorder raises on purpose."""

    code: str = "magorder_error"


class InvalidCompoundError(MagorderError, ValueError):
    """A formula or density a prediction cannot be made for.

    Attributes:
        field: The input field at fault (``"formula"`` or ``"density"``).
    """

    code = "invalid_compound"
    field: str = ""


class InvalidFormulaError(InvalidCompoundError):
    """The formula is empty, unparsable, or names something other than real elements."""

    code = "invalid_formula"
    field = "formula"


class InvalidDensityError(InvalidCompoundError):
    """The density is not a finite, physically plausible number of g/cm³."""

    code = "invalid_density"
    field = "density"


class InvalidStructureError(InvalidCompoundError):
    """A crystal structure that is empty, unreadable, several in one, or not physical."""

    code = "invalid_structure"
    field = "structure"


class StructureTooLargeError(InvalidStructureError):
    """A crystal structure over the service's bounds (bytes, sites, symmetry images)."""

    code = "structure_too_large"


class DensityRequiredError(InvalidDensityError):
    """No density was given, and the model has no density estimator to estimate one."""

    code = "density_required"


class BatchTooLargeError(MagorderError):
    """A batch request holds more items than the service accepts."""

    code = "batch_too_large"


class ServiceBusyError(MagorderError):
    """The service is doing as much of some work as it may at once; the client should retry.

    Attributes:
        retry_after_s: Seconds after which a retry may succeed.
    """

    code = "server_busy"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StructureWorkersError(MagorderError):
    """The worker processes that read structure files could not be started."""

    code = "structure_workers_unavailable"


class StartupRefusedError(MagorderError):
    """The service cannot start as configured; the message says what to change."""

    code = "startup_refused"


class ModelLoadError(StartupRefusedError):
    """The model directory is missing, corrupt, or does not match this code's feature layout."""

    code = "model_load_failed"


class NoTemporaryDirectoryError(StartupRefusedError):
    """No writable temporary directory: TensorFlow needs one the moment it is imported."""

    code = "no_temporary_directory"


class ModelNotReadyError(MagorderError):
    """A prediction was asked for before a model was loaded."""

    code = "model_not_ready"
