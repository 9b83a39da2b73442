"""Tollgate: a business-rules and validation engine for time-to-bill controls, served over gRPC.

The one import name. The flow of a decision reads in the order of its packages: ``tollgate.rules``
(parse, type-check, generate code) → ``tollgate.refdata`` (load, snapshot, store) →
``tollgate.evaluators`` (bind, decide, roll up) → ``tollgate.server`` → ``tollgate.clients``;
``tollgate.api`` holds the generated gRPC stubs. In the repository each package but ``api`` is a
top-level folder, linked from here (README, "Layout").
"""
