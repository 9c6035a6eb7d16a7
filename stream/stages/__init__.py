"""Pipeline stages and their sans-I/O helpers."""
