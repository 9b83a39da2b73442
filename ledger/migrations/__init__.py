"""Alembic migrations of the ledger, run at start by tollgate.ledger.store.migrate (no alembic.ini)."""
