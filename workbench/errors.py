"""Every error the workbench raises on purpose derives from WorkbenchError.

Messages are for people: what was wrong, with which input, and what to do about it.
"""


class WorkbenchError(Exception):
    """Base class of the workbench's own errors."""


class ConfigError(WorkbenchError, ValueError):
    """A config field holds a value outside its allowed set or range."""


class CheckpointError(WorkbenchError):
    """A checkpoint folder is missing files, has an unknown layout or unsupported settings."""


class UnsafeCheckpoint(CheckpointError):
    """A pickled checkpoint holds something other than plain tensors."""


class ChecksumMismatch(CheckpointError):
    """A checkpoint file's SHA256 differs from the published or manifest value."""

    def __init__(self, file: str, expected: str, actual: str):
        self.file, self.expected, self.actual = file, expected, actual
        super().__init__(
            f"{file}: SHA256 is {actual}, expected {expected}. The file is corrupt or not the "
            "published one; download it again (or pass verify=False if you changed it on purpose)."
        )


class KernelUnavailable(WorkbenchError):
    """The requested kernel cannot run here; the message says why."""


class PromptError(WorkbenchError, ValueError):
    """A conversation cannot be rendered, or the prompt does not fit the context."""


class CacheError(WorkbenchError):
    """The cache folder cannot be used (not writable, interrupted build)."""


class BatchMemoryError(WorkbenchError, MemoryError):
    """A batch did not fit in GPU memory. Names the batch size that failed and one that would fit;
    `finished` holds the records that were complete before it failed (none is lost)."""

    def __init__(self, message: str, batch_size: int, fits: int, finished: list):
        self.batch_size, self.fits, self.finished = batch_size, fits, finished
        super().__init__(message)
