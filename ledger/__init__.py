"""The decision ledger: every validation call on record (a batch, and a decision per item) in a relational database.

schema.py: the tables; store.py: connecting (SQLite by default, PostgreSQL shared by replicas); migrations/: Alembic,
run at start; recorder.py: recording one call; reading.py: what ``tollgate audit`` shows.
"""
