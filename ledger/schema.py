"""The ledger's tables (SQLAlchemy Core). A change here needs a new revision in ledger/migrations/versions/."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# One row per validation call (per stream chunk for a streaming call).
batches = Table(
    "batches", metadata,
    Column("batch_id", String(36), primary_key=True),  # a UUID, returned in ValidationResponse.batch_id
    Column("request_id", Text, nullable=False),  # the caller's, "" when none was given
    Column("correlation_id", Text, nullable=False),
    Column("caller", Text, nullable=False),  # the caller's identity name (server/authentication.py)
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("answered_at", DateTime(timezone=True), nullable=False),
    Column("item_kind", String(32), nullable=False),
    Column("rulesets", Text, nullable=False),  # JSON: [{"id", "version", "digest"}], in the order they run
    Column("snapshot_id", Text, nullable=False),
    Column("engine_version", Text, nullable=False),
    Column("total", Integer, nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("enriched", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    # JSON {account: {group key: amount}}: what the accounts held for the batch's groups when it was decided
    # (docs/controls.md); a replay reads these again. Null: it read none.
    Column("priors", Text, nullable=True),
    # "partial" or "all_or_nothing", as the call asked (a replay applies it again); NULL: recorded before 0004.
    Column("acceptance", String(16), nullable=True),
    Index("ix_batches_answered_at", "answered_at", "batch_id"),  # export and purge walk batches by answer time
)

# One row per item decided, in request order.
decisions = Table(
    "decisions", metadata,
    Column("batch_id", String(36), ForeignKey("batches.batch_id"), primary_key=True),
    Column("position", Integer, primary_key=True),  # from 0, in request order
    Column("item_kind", String(32), nullable=False),
    Column("item_id", Text, nullable=False),
    Column("input", Text, nullable=False),  # JSON of the item's wire fields as received
    Column("outcome", String(16), nullable=False),
    Column("reasons", Text, nullable=False),  # JSON list
    Column("enrichments", Text, nullable=False),  # JSON list
    Index("ix_decisions_item", "item_id", "item_kind"),
)

# Ruleset files' text by content digest: a past decision's rules can be compiled again after the files changed.
ruleset_sources = Table(
    "ruleset_sources", metadata,
    Column("digest", String(64), primary_key=True),  # sha256 of the file's text (UTF-8), hex
    Column("ruleset_id", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("path", Text, nullable=False),  # where it was read from, for the reader
    Column("source", Text, nullable=False),
)

# What the ledger accepted against each account's groups (evaluators/accounts.py): an item's amount per group, for
# items accepted and not billed yet. Deciding the item again replaces its rows; a rejection removes them.
consumption = Table(
    "consumption", metadata,
    Column("account", String(63), primary_key=True),
    Column("group_key", Text, primary_key=True),  # JSON of the group's values
    Column("item_kind", String(32), primary_key=True),
    Column("item_id", Text, primary_key=True),
    Column("amount", Text, nullable=False),  # a decimal, exact
    Column("batch_id", String(36), nullable=False),  # the batch that accepted it
    Index("ix_consumption_item", "item_kind", "item_id"),
)

# A row per account group ever written to: the row a call locks to write the group's consumption (concurrent calls
# on one cap serialize on it, calls on other caps do not), and a version that tells a call whether what it read is
# still what the account holds.
account_keys = Table(
    "account_keys", metadata,
    Column("account", String(63), primary_key=True),
    Column("group_key", Text, primary_key=True),
    Column("version", BigInteger, nullable=False),
)

# Validation requests with a request id (AIP-155): a retry with the same id and payload gets the recorded response.
requests = Table(
    "requests", metadata,
    Column("caller", Text, primary_key=True),  # ids are the caller's own: another caller's id is another request
    Column("request_id", String(128), primary_key=True),
    Column("payload_digest", String(64), nullable=False),  # sha256 of the method and the request's bytes
    Column("batch_id", String(36), nullable=False),
    Column("response", LargeBinary, nullable=False),  # the ValidationResponse as answered
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("ix_requests_recorded_at", "recorded_at"),
)

# The exception queue: one row per item whose latest decision rejected or held it (ledger/exceptions.py).
exceptions = Table(
    "exceptions", metadata,
    Column("exception_id", Integer, primary_key=True, autoincrement=True),
    Column("item_kind", String(32), nullable=False),
    Column("item_id", Text, nullable=False),
    Column("status", String(16), nullable=False),  # open, resolved, waived
    Column("outcome", String(16), nullable=False),  # of the latest decision that kept it here: reject or hold
    Column("reasons", Text, nullable=False),  # JSON list: every reason of that decision
    Column("codes", Text, nullable=False),  # " CODE1 CODE2 ": the reasons that make it an exception, space-delimited
    Column("rule_ids", Text, nullable=False),  # " RULE1 RULE2 ": their rules, the same way
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("times_seen", Integer, nullable=False),
    Column("batch_id", String(36), nullable=False),  # the latest such decision: decisions (batch_id, position)
    Column("position", Integer, nullable=False),
    Column("project_id", Text),  # from the recorded input (an invoice line's: its invoice header's)
    Column("customer_id", Text),
    Column("worker_id", Text),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolved_batch_id", String(36)),  # the decision that resolved it
    Column("resolved_position", Integer),
    Column("waived_by", Text),
    Column("waived_at", DateTime(timezone=True)),
    Column("waive_reason", Text),
    UniqueConstraint("item_kind", "item_id", name="uq_exceptions_item"),
    Index("ix_exceptions_status_first_seen", "status", "first_seen"),
)
