"""Placeholder module: filled in by the plugin-system work (issue 3)."""
