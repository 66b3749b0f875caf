"""Re-export of `nnc.errors.NncError`, the user-facing error (kept for existing imports)."""

from nnc.errors import NncError

__all__ = ["NncError"]
