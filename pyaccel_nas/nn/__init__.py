"""Modules built on the fused ops (filled in by the nn layer)."""
