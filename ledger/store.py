"""Connecting to the ledger's database, and bringing its schema up to date at start.

SQLite (the default: a file in data_dir, shared by every worker of the supervisor) runs in WAL mode with
synchronous=FULL (a commit is on disk before the call is answered) and a busy timeout, so workers writing at
once wait for each other rather than fail; a writing transaction begins IMMEDIATE (holding the write lock from its
first statement), a connection with the execution option ``ledger_read`` only reads.
PostgreSQL (shared by replicas) goes through psycopg 3.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    insert,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import UserDefinedType

from tollgate.rules.problems import Problem, ProblemsError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_FILE = "tollgate.db"
BUSY_TIMEOUT_MS = 10_000
# How long connecting to PostgreSQL may take (unless the URL says): past it the call's write set goes to the spool,
# rather than the call waiting on a host that does not answer (libpq's default is to wait for ever).
CONNECT_TIMEOUT_SECONDS = 5
# pg_advisory_lock key taken while migrating, so replicas starting at once migrate one after the other.
MIGRATION_LOCK_KEY = 0x7011_6A7E
SCHEMES = ("sqlite", "postgresql+psycopg")


def masked(url: str | URL) -> str:
    """The URL with any password hidden, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)"


def database_url(database_url: str | None, data_dir: Path) -> URL:
    """The URL to use: ``database_url``, or the SQLite file tollgate.db in ``data_dir`` (created if missing).
    ``postgresql://`` means psycopg 3; any other scheme is refused, naming the setting."""
    if database_url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        return URL.create("sqlite", database=str(data_dir / DEFAULT_FILE))
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ProblemsError([Problem("database_url", None, masked(database_url),
                                     "is not a database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")]
                            ) from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.drivername not in SCHEMES:
        raise ProblemsError([Problem("database_url", None, masked(url),
                                     f"scheme {url.drivername!r} is not one the ledger takes: sqlite:///PATH or "
                                     "postgresql+psycopg://USER@HOST/DB")])
    if url.drivername == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    return url


def connect(url: URL | str, **options: Any) -> Engine:
    """An engine for ``url``; SQLite connections get WAL, synchronous=FULL and a busy timeout."""
    url = make_url(url)
    if url.drivername.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
                               **options)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # transactions begin in _begin below, not in the driver
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            # A recording transaction takes the write lock when it begins, so that what it reads (a request id, the
            # accounts it settles) stays true until it commits; a read-only one (ledger_read) takes no lock.
            read_only = connection.get_execution_options().get("ledger_read", False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    if "connect_timeout" not in url.query:
        options.setdefault("connect_args", {}).setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    engine = create_engine(url, pool_pre_ping=True, **options)

    @event.listens_for(engine, "connect")
    def _custom_plans(dbapi_connection: Any, _record: Any) -> None:
        # psycopg prepares a statement run five times, and PostgreSQL may then plan it once for any parameters: a
        # list of keys (``listed``) would no longer be planned as the values it holds.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_connection.commit()

    return engine


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent), one process at a time: a PostgreSQL advisory lock,
    or for SQLite a lock file beside the database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    database = engine.url.database
    sqlite_file = engine.url.drivername.startswith("sqlite") and database not in (None, "", ":memory:")
    lock = _file_lock(Path(f"{database}.migrate-lock")) if sqlite_file else contextlib.nullcontext()
    with lock, engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
        try:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
        finally:
            if postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                connection.commit()


# PostgreSQL's error classes that mean the server cannot take the work now: connection exceptions (08),
# insufficient resources (53: too many connections, disk full), operator intervention (57: shutting down, a
# crash restart), system errors (58: I/O). Any other class with a code is about the statement (class 40: this
# transaction chose to give way, try again; 54: a value past a limit; 22: bad data) and is not an outage.
_OUTAGE_CLASSES = ("08", "53", "57", "58")
# sqlite3 raises OperationalError for a missing table or bad SQL too: only these mean the file cannot be written now.
_SQLITE_UNREACHABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_FULL",
                       "SQLITE_PROTOCOL")


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached now (refused, reset, timed out, busy past its timeout),
    rather than that the write is wrong (a constraint violated, a table missing: a bug, which must fail loudly, not
    be spooled)."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, (OperationalError, InterfaceError)):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate:  # PostgreSQL answered (a connection refused or reset has no code)
        return str(sqlstate).startswith(_OUTAGE_CLASSES)
    sqlite_error = getattr(error.orig, "sqlite_errorname", None)
    return sqlite_error is None or sqlite_error.startswith(_SQLITE_UNREACHABLE)



def out_of_reach(engine: Engine, error: BaseException) -> bool:
    """Whether ``error`` came of the database being out of reach: it says so (``unreachable``), or the database
    cannot be reached now. A connection reset under a statement does not always say so: psycopg raised
    ProgrammingError ("COPY cannot be mixed with other operations") as the server went away under a call (CI, under
    load). Otherwise the statement was refused: a bug, to be raised as it is. Pings only for an error that does not
    say, so a working call pays nothing."""
    if unreachable(error):
        return True
    if not isinstance(error, DBAPIError):
        return False
    try:
        with engine.connect() as probe:
            probe.exec_driver_sql("SELECT 1")
    except DBAPIError as down:
        return unreachable(down)
    return False

def insert_ignoring_duplicates(table: Table, dialect: str) -> Any:
    """INSERT ... ON CONFLICT (primary key) DO NOTHING: another worker or replica may insert the same row at once."""
    keys = [column.name for column in table.primary_key]
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=keys)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing(index_elements=keys)


@functools.cache
def _plain(table: Table) -> bool:
    """Whether every column of ``table`` takes its Python value as the driver does (text and integers), so its rows
    can skip SQLAlchemy's per-row processing; a datetime column needs SQLAlchemy's (SQLite stores it as text)."""
    return all(isinstance(column.type, (String, Integer)) for column in table.columns)


def bulk_insert(connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert many rows (each a value per one of ``columns``) at once through the driver: COPY on PostgreSQL,
    executemany on SQLite. SQLAlchemy's own executemany spent 40% of a 10,000-row insert building each row's
    parameters (benchmarks/profile_ledger.py)."""
    if not _plain(table):
        connection.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    listed = ", ".join(quote(c) for c in columns)
    postgres = dialect.name == "postgresql"
    statement = f"COPY {quote(table.name)} ({listed}) FROM STDIN" if postgres else \
        f"INSERT INTO {quote(table.name)} ({listed}) VALUES ({', '.join('?' * len(columns))})"
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if postgres:
            with cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cursor.executemany(statement, rows)
    except dialect.loaded_dbapi.Error as error:
        # As SQLAlchemy's own execution would raise it (OperationalError, IntegrityError, ...), so that callers
        # tell an unreachable database from a refused write the same way whichever path wrote.
        lost = dialect.is_disconnect(error, connection.connection.dbapi_connection, cursor)
        raise DBAPIError.instance(statement, None, error, dialect.loaded_dbapi.Error, connection_invalidated=lost,
                                  dialect=dialect) from error
    finally:
        cursor.close()


def listed(column: Any, name: str, dialect: str) -> ColumnElement[bool]:
    """``column`` is one of the values bound as ``name`` (see ``bound_list``): on PostgreSQL ``= ANY`` of one text
    array, else an IN list of placeholders. Planned with the array's values (``connect``: custom plans), it is an
    index condition, or a hashed filter; as ``IN (SELECT ...)`` of a JSON document it was a hash join over every
    row of the account on tables not analyzed yet (13 ms rather than 0.3 ms for a timesheet's keys), and as ``=
    ANY(ARRAY(SELECT ...))`` a filter searching the array linearly per row (143 ms for a 1,000-entry call)."""
    if dialect == "postgresql":
        member: ColumnElement[bool] = column == any_(text_array(name))
        return member
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]


class _TextArrayLiteral(UserDefinedType[str]):
    """A ``text[]`` parameter sent as its literal text, typed ``$1::TEXT[]``: the server reads the array once, when
    it binds the parameter, and plans with it as a constant (hashed when it filters). Cast in the statement instead
    (``CAST($1 AS TEXT[])``), the array was read again for every row it was compared with."""

    cache_ok = True
    render_bind_cast = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "TEXT[]"


def text_array(name: str) -> Any:
    """PostgreSQL: the parameter ``name`` (a ``bound_list``) as ``text[]``."""
    return bindparam(name, type_=_TextArrayLiteral())


def bound_list(values: Sequence[str], dialect: str) -> Any:
    """``values`` as ``listed`` takes them: on PostgreSQL one array literal, each value quoted. psycopg's own list
    dumper took 90 ms to escape 10,000 keys, this 3 ms."""
    if dialect != "postgresql":
        return list(values)
    return "{" + ",".join('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values) + "}"


def open_database(url: URL, **options: Any) -> Engine:
    """Connect and migrate; a database that cannot be reached or migrated refuses the start, naming the setting."""
    engine = connect(url, **options)
    try:
        migrate(engine)
    except SQLAlchemyError as error:
        engine.dispose()
        raise ProblemsError([Problem("database_url", None, masked(url),
                                     f"the ledger's database cannot be opened: {type(error).__name__}: "
                                     f"{str(error).splitlines()[0]}")]) from error
    return engine
