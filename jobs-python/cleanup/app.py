"""`cleanup-py`: the `cleanup` example job (jobs/cleanup), written in Python.

Deletes expired sessions and food entries soft-deleted more than
`retention_days` days (operator argument, default 30) before the scheduled
instant. Timestamps are ISO 8601 text in UTC (`2026-11-22T10:00:00Z`), which
compares correctly as text on every backend.

It behaves like the Rust job: same arguments, same capability request, same
statements, log line, outcome, error classes and messages. Only the name
differs, so that both can be deployed side by side. (A `retention_days` so
large that the cutoff leaves the 64-bit timestamp range fails here, where the
Rust job's arithmetic would wrap around.)

Built into a WebAssembly component against `wit/job.wit` (world `job`) by
componentize-py: `cargo xtask build-jobs` writes `target/sundial-jobs/cleanup_py.wasm`.
The `wit_world` and `componentize_py_types` modules are generated from the WIT
at build time.
"""

import json
import re
from typing import List, NoReturn, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import database, log
from wit_world.imports import time as host_time  # the WIT `time` interface, not Python's module
from wit_world.imports.types import (
    Capability_Database,
    Context,
    DbAccess,
    DbError,
    DbError_Busy,
    DbError_Constraint,
    DbError_Denied,
    DbError_Other,
    Item,
    JobError,
    JobError_Fatal,
    JobError_Retryable,
    JobInfo,
    JobKind,
    Level,
    Outcome,
    Page,
    Value,
    Value_Text,
)

DEFAULT_RETENTION_DAYS = 30

MS_PER_DAY = 86_400_000

# Bounds of the WIT `s64` a timestamp travels as.
S64_MIN, S64_MAX = -(2**63), 2**63 - 1

# What Rust's `i64::from_str` accepts: an optional sign and ASCII digits only
# (Python's `int()` would also take spaces, `_` separators and other digits).
WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


class WitWorld(wit_world.WitWorld):
    """The component's exports: a single-shot job, so `run` does the work."""

    def describe(self) -> JobInfo:
        return JobInfo(
            name="cleanup-py",
            description=(
                "Deletes expired sessions and food entries soft-deleted past the retention period"
            ),
            kind=JobKind.SINGLE,
            default_schedule="15 3 * * *",
            default_timezone="UTC",
            capabilities=[Capability_Database(DbAccess.READ_WRITE)],
        )

    def run(self, ctx: Context) -> Outcome:
        days = retention_days(ctx)
        now = ctx.scheduled_for
        cutoff = iso_utc(now - days * MS_PER_DAY)

        sessions = execute("DELETE FROM sessions WHERE expires_at < $1", [Value_Text(iso_utc(now))])
        entries = execute(
            "DELETE FROM food_entries WHERE deleted_at IS NOT NULL AND deleted_at < $1",
            [Value_Text(cutoff)],
        )
        log.log(
            Level.INFO,
            f"deleted {sessions} expired sessions"
            f" and {entries} food entries deleted before {cutoff}",
        )
        return Outcome(
            changed=sessions + entries,
            message=f"{sessions} sessions, {entries} food entries deleted",
        )

    # The host never calls the item exports of a single-shot job; answer them
    # as the Rust SDK does, should it ever happen.

    def items(self, ctx: Context, cursor: Optional[str]) -> Page:
        fail(JobError_Fatal("items called on a single-shot job"))

    def run_item(self, ctx: Context, item: Item) -> Outcome:
        fail(JobError_Fatal("run-item called on a single-shot job"))


def fail(error: JobError) -> NoReturn:
    """Ends the call with `error`: an `Err` becomes the export's `result` error."""
    raise Err(error)


def arg(ctx: Context, name: str) -> Optional[str]:
    """The operator argument `name` (`--arg name=value`), if given."""
    return next((value for key, value in ctx.args if key == name), None)


def retention_days(ctx: Context) -> int:
    """The `retention_days` argument: a whole number of days, at least 0."""
    value = arg(ctx, "retention_days")
    if value is None:
        return DEFAULT_RETENTION_DAYS
    days = int(value) if WHOLE_NUMBER.fullmatch(value) else None
    if days is None or not 0 <= days <= S64_MAX:
        # json.dumps quotes the value the way Rust's `{:?}` does.
        quoted = json.dumps(value, ensure_ascii=False)
        fail(JobError_Fatal(f"retention_days must be a whole number of days, got {quoted}"))
    return days


def iso_utc(ms: int) -> str:
    """ISO 8601 UTC text of `ms` since the Unix epoch, to the second (`2026-11-22T10:00:00Z`).

    The calendar arithmetic is the host's (`time.to-local`), as in the Rust job.
    """
    if not S64_MIN <= ms <= S64_MAX:
        fail(JobError_Fatal(f"instant {ms} ms is out of range"))
    try:
        t = host_time.to_local(ms, "UTC")
    except Err as e:
        # The host's message says why (an unknown zone, an instant out of range).
        fail(JobError_Fatal(e.value))
    return f"{t.year:04}-{t.month:02}-{t.day:02}T{t.hour:02}:{t.minute:02}:{t.second:02}Z"


def execute(sql: str, params: List[Value]) -> int:
    """Runs a statement that changes data; a busy database is retryable, every other error fatal."""
    try:
        return database.execute(sql, params)
    except Err as e:
        fail(job_error(e.value))


def job_error(error: DbError) -> JobError:
    """The job error for a database error, with the Rust SDK's wording."""
    if isinstance(error, DbError_Busy):
        return JobError_Retryable(f"database busy: {error.value}")
    if isinstance(error, DbError_Denied):
        return JobError_Fatal(f"database access denied: {error.value}")
    if isinstance(error, DbError_Constraint):
        return JobError_Fatal(f"constraint violated: {error.value}")
    if isinstance(error, DbError_Other):
        return JobError_Fatal(f"database error: {error.value}")
    return JobError_Fatal(f"database error: {error!r}")
