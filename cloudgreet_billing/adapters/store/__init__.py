"""Stores: the protocol, and the SQLite and PostgreSQL implementations."""
