"""Reference data: exports loaded and validated, held as immutable snapshots, kept in a store.

Load (``loaders``: CSV, JSON Lines, Parquet into validated rows) → snapshot (``snapshot``: versioned
tables, content-addressed ids; ``codec``: their canonical bytes; ``diff``) → store (``store``: the
interface and the in-process store; ``directory_store``: files shared by the workers of one host;
``redis_store``: shared by every replica).
"""
