"""pyconv's version: the installed package's (pyproject.toml holds it)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pyconv")
except PackageNotFoundError:        # run from a source tree that was never installed
    __version__ = "0+unknown"
