"""The core: records, registry, clock, location capture and hook dispatch.

Imports nothing else from taskscope, so every other layer can build on it.
"""
