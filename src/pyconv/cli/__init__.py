"""The `pyconv` command (main) and what `pyconv train` runs (runs)."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
