"""Graph and loop passes, registered by name (see nnc.passes.manager)."""
