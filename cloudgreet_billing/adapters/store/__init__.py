"""Stores: the protocol, and the SQLite, PostgreSQL and Supabase REST implementations."""
