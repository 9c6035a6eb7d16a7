"""The static dashboard, shipped as package data and served by ``stream.server``."""
