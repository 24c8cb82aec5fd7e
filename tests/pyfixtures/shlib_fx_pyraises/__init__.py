"""Fails on import, as a package with a broken module does."""
raise RuntimeError("shlib-fx-pyraises fails on import")
