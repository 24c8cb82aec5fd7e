"""Imports cleanly: a package with one submodule (two modules added to sys.modules)."""
from shlib_fx_pyok.sub import VALUE

__all__ = ["VALUE"]
