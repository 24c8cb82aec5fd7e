"""Errors shlib raises: each names what is wrong and what to do."""

from __future__ import annotations


class ShlibError(Exception):
    """Base of every error shlib raises on purpose."""


class EngineUnavailable(ShlibError):
    """The Docker engine cannot be reached."""


class SpecError(ShlibError, ValueError):
    """An experiment spec (or notebook parameter) is invalid: the message names the field."""


class RuntimeUnavailable(ShlibError):
    """A requested runtime is not usable on this host."""


class ImageError(ShlibError):
    """The Node image cannot be built or found."""


class LibraryError(ShlibError):
    """The shared library (npm modules) cannot be installed or placed."""


class ResultsError(ShlibError):
    """A results directory is missing, malformed, or belongs to another run."""


class Interrupted(ShlibError):
    """A run was stopped by a signal; what was measured is on disk and resumable."""


class AnalysisError(ShlibError, ValueError):
    """Results cannot be analysed as asked (no rows, missing column, absent baseline): the message says why."""
