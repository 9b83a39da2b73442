"""The Python client and the ``tollgate`` command line."""
