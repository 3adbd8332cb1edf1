"""The connection pool and the one boundary where driver errors become service errors."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, ClassVar, Final, Literal, TypeAlias

import asyncpg

from service.errors import StoreUnavailable
from service.observe import metrics

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    Connection: TypeAlias = (
        asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    )
else:  # asyncpg's classes are generic only in its stubs
    Pool = asyncpg.Pool
    Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

BIGINT_MAX: Final = 2**63 - 1
"""PostgreSQL's largest bigint. Every seq, last_seq and tx_id is one, so an integer the API
takes for them is bounded by it: past it, asyncpg refuses the parameter (a 500, not a 400)."""

# Errors that mean "the database is not there right now", as opposed to a bug in our SQL.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    # A query sent to a pooled connection whose backend was just terminated can meet asyncpg's
    # "cannot switch to state" race instead of a clean connection error (asyncpg #1069).
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


# PostgreSQL answered, and refused us: a wrong password or role, a database that does not
# exist. No retry helps; the operator must fix the URL, and hears it in one line.
REFUSED_LOGIN_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # wrong password, unknown role, pg_hba
    asyncpg.InvalidCatalogNameError,  # no such database
)


def asyncpg_dsn(url: str) -> str:
    """asyncpg wants a plain ``postgresql://`` URL; accept SQLAlchemy-style schemes too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def sqlalchemy_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return "postgresql+asyncpg://" + rest if scheme.startswith("postgres") else url


Pooler: TypeAlias = Literal["none", "transaction"]

# Floats render as their shortest exact text (PostgreSQL's default since 12) in every session:
# an event's JSON, and so its chain hash, must read the same wherever it is read
# (store/event_log.py). Direct, we ask for it at login; behind a pooler we check it instead.
FLOAT_DIGITS: Final = "1"

# Asked for at login on a direct connection. ``jit`` off: every query genstream makes reads an
# index range and returns within milliseconds, but a generic plan over many partitions is
# costed without its parameters' selectivity, above ``jit_above_cost``, and compiling it took
# 110 ms on a page that runs in 2 ms. Behind a pooler the role's setting applies (README).
SESSION_SETTINGS: Final = {"extra_float_digits": FLOAT_DIGITS, "jit": "off"}

SELECT_FLOAT_DIGITS = """
SELECT current_setting('extra_float_digits')
"""

# A column of every array type genstream's statements bind or read: asyncpg has codecs for
# few arrays built in (text[], oid[]) and learns the others from the catalog.
SELECT_ARRAY_TYPES = """
SELECT
    NULL::bool[],
    NULL::int4[],
    NULL::int8[],
    NULL::float8[],
    NULL::jsonb[],
    NULL::text[],
    NULL::uuid[]
"""


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, pooler: Pooler = "none"
) -> Pool:
    """The process's pool. ``pooler="transaction"``: ``url`` is a pooler (PgBouncer) in
    transaction mode, which hands each transaction to whichever server connection is free, so
    no state may outlive a transaction on the server side:

    * no named prepared statements (PgBouncer 1.18 cannot route them): with no statement
      cache, asyncpg sends each query as the unnamed statement, parsed again with every
      execution, inside the one Sync that runs it;
    * no startup parameters (PgBouncer refuses those it does not know, and would not set them
      on the server connections it shares anyway): ``extra_float_digits`` is checked instead;
    * no reset query on release: see below;
    * the array types are learnt in one transaction as each connection opens
      (``_learn_array_types``), not at first use.

    Nothing genstream does holds a session: advisory locks are ``pg_advisory_xact_lock``,
    REPEATABLE READ snapshots are transactions, ``SET`` is ``SET LOCAL``, LISTEN has its own
    direct connection (``listener.py``). So no pool sends asyncpg's reset query on release
    (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): there is nothing of ours
    to reset, behind a pooler it would run on whatever server connection is free, and direct
    it is one more round trip per acquire, which cost the append 70-250 µs (BENCHMARKS.md,
    case 1). asyncpg still rolls back a transaction left open, and a cancel that arrives late
    cannot hit the next query (tests/store/test_db.py shows both, with and without it).
    """
    behind_pooler = pooler == "transaction"
    try:
        pool = await asyncpg.create_pool(
            asyncpg_dsn(url),
            min_size=min_size,
            max_size=max_size,
            command_timeout=60,
            statement_cache_size=0 if behind_pooler else 100,
            server_settings=None if behind_pooler else dict(SESSION_SETTINGS),
            reset=_nothing_to_reset,
            init=_learn_array_types if behind_pooler else None,
        )
    except Exception as exc:
        if (error := connect_error(exc)) is None:
            raise
        raise error from exc
    if behind_pooler:
        await _check_float_digits(pool)
    return pool


async def _nothing_to_reset(_conn: object) -> None:
    return None


async def _learn_array_types(conn: Connection) -> None:
    """asyncpg learns a type it has no codec for with three statements: ``jit`` set off for the
    session (``set_config(..., false)``), the catalog query, ``jit`` set back. Outside a
    transaction, a pooler may send each to a different server connection and leave one with
    ``jit`` off for whoever gets it next; inside one, all three run on the same."""
    async with conn.transaction():
        await conn.fetchrow(SELECT_ARRAY_TYPES)


async def _check_float_digits(pool: Pool) -> None:
    async with connection(pool) as conn:
        digits = await conn.fetchval(SELECT_FLOAT_DIGITS)
    if digits != FLOAT_DIGITS:
        await pool.close()
        raise StoreUnavailable(
            f"behind the pooler, extra_float_digits is {digits}, not {FLOAT_DIGITS}: events "
            "would read differently here than elsewhere (and break their chain hashes). "
            f"Run ALTER ROLE ... SET extra_float_digits = {FLOAT_DIGITS} (or the database's "
            "or the server's setting), not a pooler's connect_query"
        )


def connect_error(exc: BaseException) -> StoreUnavailable | None:
    """What a failed connection attempt means to the service: ``StoreUnavailable`` when
    PostgreSQL could not be reached or refused the login, wherever that is in ``exc``'s
    chain (SQLAlchemy, under Alembic, wraps the driver's error); None for anything else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, asyncpg.ProtocolViolationError) and (
            "unsupported startup parameter" in str(current)
        ):
            # PgBouncer's answer to the extra_float_digits we send PostgreSQL directly.
            return StoreUnavailable(
                f"{current}: this URL is a pooler (PgBouncer?), not PostgreSQL; behind a "
                "transaction-mode pooler set GENSTREAM_DATABASE_POOLER=transaction and "
                "GENSTREAM_DIRECT_URL"
            )
        if isinstance(current, REFUSED_LOGIN_ERRORS):
            return StoreUnavailable(f"PostgreSQL refused the connection: {current}")
        if isinstance(current, UNAVAILABLE_ERRORS):
            return StoreUnavailable(f"cannot connect to PostgreSQL: {current}")
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class _Waiting:
    """Tasks of this process inside ``pool.acquire()`` now, per pool (``id(pool)``): for the
    pools' metrics (their sum), and so a ``HeldConnection`` gives its pool's back to them."""

    by_pool: ClassVar[dict[int, int]] = {}


def waiting_for_a_connection(pool: Pool) -> int:
    """Tasks of this process waiting for one of ``pool``'s connections now."""
    return _Waiting.by_pool.get(id(pool), 0)


async def _acquire(pool: Pool) -> asyncpg.pool.PoolConnectionProxy[asyncpg.Record]:
    """``pool.acquire()``, counted while it waits. A pool with none to give first takes back
    the connection a ``HeldConnection`` keeps between its units, if it is between two: its
    keeper would notice the wait only after its next unit, which may be a second away."""
    if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
        for held in [held for held in _HELD if held.pool is pool and held.idle]:
            await held.release()
    key = id(pool)
    _Waiting.by_pool[key] = _Waiting.by_pool.get(key, 0) + 1
    try:
        return await pool.acquire()
    finally:
        if (left := _Waiting.by_pool[key] - 1) > 0:
            _Waiting.by_pool[key] = left
        else:
            del _Waiting.by_pool[key]


def observe_pool(pool: Pool) -> None:
    """Report ``pool``'s connections in the process's metrics until ``forget_pool``."""
    metrics.POOL_CONNECTIONS.read_from(
        pool,
        lambda: [
            (("idle",), pool.get_idle_size()),
            (("in_use",), pool.get_size() - pool.get_idle_size()),
        ],
    )
    metrics.POOL_MAX.read_from(pool, lambda: [((), pool.get_max_size())])
    metrics.POOL_WAITING.read_from(_Waiting, lambda: [((), sum(_Waiting.by_pool.values()))])


def forget_pool(pool: Pool) -> None:
    metrics.POOL_CONNECTIONS.forget(pool)
    metrics.POOL_MAX.forget(pool)


@asynccontextmanager
async def connection(pool: Pool) -> AsyncIterator[Connection]:
    """A pooled connection for one unit of work; connection trouble becomes StoreUnavailable."""
    try:
        conn = await _acquire(pool)
        try:
            yield conn
        except BaseException:
            # The body's own exception is what the caller must see: a cancel above all (a
            # release on a connection the server dropped raises, and would turn a cancelled
            # writer into one that retries for its whole retry window).
            with suppress(*UNAVAILABLE_ERRORS):
                await pool.release(conn)
            raise
        await pool.release(conn)
    except UNAVAILABLE_ERRORS as exc:
        raise StoreUnavailable(f"PostgreSQL is unavailable: {exc}") from exc


# Every HeldConnection of the process (weakly): ``_acquire`` looks for its pool's among them.
_HELD: weakref.WeakSet[HeldConnection] = weakref.WeakSet()


class HeldConnection:
    """One pooled connection kept by a single task across its units of work, for a task that
    does nothing else (the appender's sender): an acquire and a release cost a lone append
    ~25 µs of its ~550 (bench case 1's layer table). It stays one of the pool's: given back
    after a unit whenever another task waits for the pool, at once when one starts waiting
    between two units (``_acquire``), by ``release`` when its task has nothing to do, and
    every ``UNITS_MAX`` units (so that the pool's own recycling, ``max_queries``, and
    ``expire_connections`` reach it). Dropped, and a fresh one acquired for the next unit,
    whenever one ends in connection trouble or a cancel (the session's state is then
    unknown), or the server closed it between two. Not for concurrent use."""

    UNITS_MAX: ClassVar[int] = 1_000

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | None = None
        self._units = 0
        self._in_use = False
        _HELD.add(self)

    @property
    def held(self) -> bool:
        return self._conn is not None

    @property
    def idle(self) -> bool:
        """Kept, between two units."""
        return self._conn is not None and not self._in_use

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Connection]:
        """The held connection (acquired first if none is); trouble becomes StoreUnavailable."""
        self._in_use = True
        try:
            if self._conn is not None and _closed(self._conn):
                await self.release()
            if self._conn is None:
                self._conn, self._units = await _acquire(self.pool), 0
            self._units += 1
            try:
                yield self._conn
            except BaseException as exc:
                if isinstance(exc, (*UNAVAILABLE_ERRORS, asyncio.CancelledError)):
                    await self.release()
                raise
            finally:
                if waiting_for_a_connection(self.pool) or self._units >= self.UNITS_MAX:
                    await self.release()
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
        finally:
            self._in_use = False

    async def release(self) -> None:
        """Give the connection back to the pool (a dead one is closed by it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(*UNAVAILABLE_ERRORS):
                await self.pool.release(conn)


def _closed(conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> bool:
    """Closed by the server (or detached from it by the pool, which then raises)."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True
