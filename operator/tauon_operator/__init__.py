"""Tauon operator."""
