"""Tauon runtime."""
