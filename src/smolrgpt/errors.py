"""Errors that name the record and the file, so bad input never surfaces as a deep stack trace."""
from __future__ import annotations


class SmolRGPTError(Exception):
    """Base class for every error the project raises on purpose."""


class SampleError(SmolRGPTError, ValueError):
    """A sample (one record of a data file, or one request) is malformed.

    `where` names the record (id) and the file it came from so a user can find and fix it.
    """

    def __init__(self, message: str, *, sample_id: str | None = None, source: str | None = None):
        self.sample_id = sample_id
        self.source = source
        self.reason = message
        where = []
        if sample_id is not None:
            where.append(f"sample {sample_id!r}")
        if source:
            where.append(f"in {source}")
        prefix = " ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(SmolRGPTError, ValueError):
    """A configuration file or a command-line override is invalid."""


class CheckpointError(SmolRGPTError, ValueError):
    """A checkpoint is missing, partial, corrupt or does not match the model."""
