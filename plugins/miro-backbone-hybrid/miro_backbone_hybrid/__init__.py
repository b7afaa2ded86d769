"""Hybrid conv/transformer backbone plugin for MIRO (the demo's default)."""
