"""Offline-checked deployment helpers (Bicep lives beside this package)."""
