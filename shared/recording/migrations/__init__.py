"""Alembic migrations of the usage records (a package so that setuptools ships them); apply them with
``shared.recording.migrate.upgrade``."""
