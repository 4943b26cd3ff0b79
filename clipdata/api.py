"""The Python API. The CLI is a thin wrapper over these functions."""
from __future__ import annotations

from .check import InspectReport, inspect
from .conversion import Report, convert

__all__ = ["convert", "inspect", "Report", "InspectReport"]
