"""The parametrized notebooks, shipped inside the package as ``shlib.notebooks`` (see pyproject.toml)."""
