"""Backends: the only code that touches private runtime internals (through `_compat`)."""
