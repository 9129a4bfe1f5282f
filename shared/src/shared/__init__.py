"""Shared core."""
