"""The consult fixtures, for recording tests that need a consult in session."""

from tests.consults.conftest import consult_case

__all__ = ["consult_case"]
