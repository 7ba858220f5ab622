"""Cluster mode: runs shared by many processes over PostgreSQL (the record) and Redis (live)."""
