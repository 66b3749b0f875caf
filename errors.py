"""User-facing errors: the CLI prints their message on one line and exits with code 2.

They live at the package root so every layer (passes, backends, compiler) can raise them without
importing upward."""


class NncError(Exception):
    """A problem with the user's model, inputs or options (not a bug in nnc)."""

    user_error = True  # the pass manager lets these through unwrapped
