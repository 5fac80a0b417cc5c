"""Adapters from log sources into the flat log or the canonical tables."""
