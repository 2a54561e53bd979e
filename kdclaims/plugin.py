"""pytest plugin (placeholder while the engine is written)."""
