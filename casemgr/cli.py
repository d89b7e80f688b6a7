"""The ``casemgr`` command line. Machine-readable results go to stdout as one JSON line;
progress and human-readable notes go to stderr."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text
from sqlalchemy.exc import DBAPIError

from casemgr import audit
from casemgr.authz import Role
from casemgr.crypto import Crypto, KeyRing, KeyRingError, create_key_ring
from casemgr.db import create_engine, create_sessionmaker, transaction
from casemgr.errors import DomainError
from casemgr.settings import Settings

T = TypeVar("T")
err = Console(stderr=True)


def emit(payload: dict[str, Any]) -> None:
    click.echo(msgspec.json.encode(payload).decode())


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to stderr once and exit (2: the input was refused)."""
    # Plain text, not rich markup: a message naming a path such as "keys[1]" must print as
    # is; and unwrapped, so that a log line holds the whole message.
    err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    sys.exit(code)


def describe(exc: DomainError) -> str:
    """A domain error for a person: one line per refused field, else the detail.

    ``InvalidInput.detail`` already joins its field errors, so printing both the detail and
    the list showed every message twice.
    """
    errors = exc.extra.get("errors") or []
    if not errors:
        return exc.detail
    return "\n  ".join(f"{e['field']}: {e['message']}" for e in errors)


class Runtime:
    """What one command needs: settings, key ring and a session factory."""

    def __init__(self, settings: Settings, *, need_keys: bool = True) -> None:
        self.settings = settings
        self.engine = create_engine(settings.database_url)
        self.sessions = create_sessionmaker(self.engine)
        self.keyring = KeyRing(settings.keys_dir) if need_keys else None

    @property
    def crypto(self) -> Crypto:
        assert self.keyring is not None
        # Erasures from the command line (retention) are logged like the service's (issue 11).
        log_file = self.settings.shred_log_file
        on_shred = None
        if log_file is not None:
            from casemgr.backup import ShredLog

            on_shred = ShredLog(log_file).append_one
        return Crypto(self.keyring, on_shred=on_shred)


def warn(message: str) -> None:
    err.print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False)


async def _audit_head(rt: Runtime) -> int | None:
    """The audit chain's head, or None while the database is not migrated yet."""
    try:
        async with rt.sessions() as session:
            return await audit.head_seq(session)
    except (DBAPIError, OSError):
        return None


async def _seal_new_events(rt: Runtime, before: int | None) -> None:
    """Seal what the command appended, so an operator's work is never left unsealed."""
    after = await _audit_head(rt)
    if not after or after == before:
        return
    try:
        keyring = rt.keyring or KeyRing(rt.settings.keys_dir)
        await audit.seal(rt.sessions, keyring, rt.settings)
    except (audit.CheckpointRefused, KeyRingError, DBAPIError, OSError) as exc:
        warn(f"the audit chain was not sealed: {exc}")


def run(
    settings: Settings, body: Callable[[Runtime], Awaitable[T]], *, need_keys: bool = True
) -> T:
    """Run one command's work; then seal the audit events it appended (once, here)."""

    async def main() -> T:
        runtime = Runtime(settings, need_keys=need_keys)
        try:
            before = await _audit_head(runtime)
            try:
                return await body(runtime)
            finally:
                await _seal_new_events(runtime, before)
        finally:
            await runtime.engine.dispose()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        fail(describe(exc))
    except KeyRingError as exc:
        fail(str(exc))
    except audit.CheckpointRefused as exc:
        fail(f"refused to sign the audit chain: {exc}", code=1)


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """casemgr: case management for students in a school care programme."""
    try:
        ctx.obj = Settings.from_env()
    except ValueError as exc:
        fail(str(exc))


@main.command()
@click.pass_obj
def init(settings: Settings) -> None:
    """Create the key ring if absent, then migrate the database (idempotent)."""
    from casemgr.migrate import upgrade

    try:
        created = create_key_ring(settings.keys_dir)
        KeyRing(settings.keys_dir)
    except KeyRingError as exc:
        fail(str(exc))

    async def body(rt: Runtime) -> None:
        await upgrade(settings.database_url)
        await replay_shred_log(rt)
        if created:
            async with transaction(rt.sessions) as session:
                await audit.record(
                    session,
                    audit.Action.KEYS_INIT,
                    actor=None,
                    resource_type="key_ring",
                    detail={"created": created},
                )

    run(settings, body)
    emit({"keys_created": created, "migrated": True})


class Host(click.ParamType):
    """An IP address or a host name (RFC 1123) to listen on."""

    name = "host"
    _label = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.IGNORECASE)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            pass
        labels = text.removesuffix(".").split(".")
        if len(text) <= 253 and all(self._label.fullmatch(label) for label in labels):
            return text
        self.fail(f"{text!r} is neither an IP address nor a host name", param, ctx)


def uvicorn_options(host: str, port: int) -> dict[str, Any]:
    """How ``serve`` runs uvicorn (the benchmarks serve the same way).

    uvloop and httptools (dependencies of casemgr) parse HTTP and run the event loop in C:
    pure-Python h11 took a quarter of the service's CPU on a plain read. Forwarded headers
    are read by the application itself, and only from the proxies in
    CASEMGR_TRUSTED_PROXIES (casemgr.net); uvicorn must not believe them from anyone.
    """
    return {
        "host": host,
        "port": port,
        "loop": "auto",
        "http": "auto",
        "proxy_headers": False,
        "server_header": False,
    }


async def replay_shred_log(rt: Runtime) -> None:
    """Issue 11: destroy again what the shred log lists (a database restored by hand), and
    log the database's destroyed keys the log lacks (casemgr.backup)."""
    from casemgr.backup import ShredLog, replay_shreds, sync_shred_log

    if rt.settings.shred_log_file is None or rt.keyring is None:
        return
    log = ShredLog(rt.settings.shred_log_file)
    replayed = await replay_shreds(rt.sessions, Crypto(rt.keyring), log.read())
    if replayed:
        warn(f"destroyed {replayed} data keys again that the shred log lists as erased")
    await sync_shred_log(rt.sessions, log)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, type=Host())
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.pass_obj
def serve(settings: Settings, host: str, port: int) -> None:
    """Run the web service.

    Forwarded headers are read by the application itself, and only from the proxies in
    CASEMGR_TRUSTED_PROXIES (casemgr.net); uvicorn must not believe them from anyone.
    """
    import uvicorn

    from casemgr.app import create_app
    from casemgr.observability import configure_logging

    try:
        app = create_app(settings)
    except (KeyRingError, ValueError) as exc:
        fail(str(exc))
    # After the application is built (Litestar sets up logging of its own then): every
    # record in CASEMGR_LOG_FORMAT, and the access log of casemgr.observability instead of
    # uvicorn's, which would write each request's full path and query string.
    configure_logging(settings.log_format)
    uvicorn.run(app, **uvicorn_options(host, port), log_config=None, access_log=False)


@main.command()
@click.option("--if-empty", is_flag=True, help="Do nothing (exit 0) when the database has data.")
@click.option(
    "--show-logins",
    is_flag=True,
    help="Print the demo logins again (kept in the var directory when the demo was seeded).",
)
@click.pass_obj
def demo(settings: Settings, if_empty: bool, show_logins: bool) -> None:
    """Fill an empty database with a synthetic county and print one login per role."""
    from casemgr.demo import DatabaseNotEmpty, demo_school_id, save_logins, saved_logins, seed

    async def stored(rt: Runtime) -> list[dict[str, Any]] | None:
        return saved_logins(settings.var_dir, await demo_school_id(rt.sessions))

    if show_logins:
        logins = run(settings, stored)
        if logins is None:
            fail("no demo logins are kept for this database (was it seeded by `casemgr demo`?)")
        print_demo_logins(logins)
        emit({"logins": logins})
        return

    async def body(rt: Runtime) -> Any:
        logins = await seed(rt.sessions, rt.crypto)
        school_id = await demo_school_id(rt.sessions)
        assert school_id is not None
        save_logins(settings.var_dir, school_id, logins)
        return logins

    try:
        logins = run(settings, body)
    except DatabaseNotEmpty:
        if not if_empty:
            fail("the database is not empty; the demo only fills an empty one")
        logins = run(settings, stored)
        if logins is None:
            err.print("The database already has data (not a demo this checkout seeded).")
            return
    print_demo_logins(logins)
    emit({"logins": logins})


def print_demo_logins(logins: list[dict[str, Any]]) -> None:
    """One login per block, every value on one unbroken line (copy them whole)."""
    lines = ["", "Demo logins (synthetic data; `casemgr demo --show-logins` prints them again):"]
    for login in logins:
        lines.append(f"  {login['role']}: username {login['username']}")
        lines.append(f"      password     {login['password']}")
        if login.get("totp_secret"):
            lines.append(f"      TOTP secret  {login['totp_secret']}")
        for school_class in login.get("classes") or []:
            lines.append(
                f"      class        {school_class['name']} ({school_class['school_year']})"
                f"  id {school_class['id']}"
            )
    lines.append("")
    click.echo("\n".join(lines), err=True)


@main.group()
def school() -> None:
    """Schools."""


@school.command("add")
@click.option("--name", required=True)
@click.option("--code", required=True)
@click.pass_obj
def school_add(settings: Settings, name: str, code: str) -> None:
    """Add a school."""
    from casemgr.schools.services import add_school

    async def body(rt: Runtime) -> uuid.UUID:
        async with transaction(rt.sessions) as session:
            return (await add_school(session, name=name, code=code)).id

    emit({"id": str(run(settings, body, need_keys=False))})


@main.group("class")
def class_() -> None:
    """Classes."""


@class_.command("add")
@click.option("--school-id", required=True, type=click.UUID)
@click.option("--name", required=True)
@click.option("--grade", required=True, type=int)
@click.option("--school-year", required=True, help="e.g. 2026-2027")
@click.pass_obj
def class_add(
    settings: Settings, school_id: uuid.UUID, name: str, grade: int, school_year: str
) -> None:
    """Add a class to a school."""
    from casemgr.schools.services import add_class

    async def body(rt: Runtime) -> uuid.UUID:
        async with transaction(rt.sessions) as session:
            created = await add_class(
                session, school_id=school_id, name=name, grade=grade, school_year=school_year
            )
            return created.id

    emit({"id": str(run(settings, body, need_keys=False))})


@main.group()
def user() -> None:
    """Staff accounts."""


@user.command("add")
@click.option("--username", required=True)
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--school-id", type=click.UUID)
@click.option(
    "--class-id",
    "class_ids",
    multiple=True,
    type=click.UUID,
    help="A class teacher's class (repeatable).",
)
@click.option(
    "--password-stdin", is_flag=True, required=True, help="Read the password from standard input."
)
@click.pass_obj
def user_add(
    settings: Settings,
    username: str,
    role: str,
    school_id: uuid.UUID | None,
    class_ids: tuple[uuid.UUID, ...],
    password_stdin: bool,
) -> None:
    """Add a staff account; prints its id and, for roles that need one, the TOTP secret."""
    from casemgr.accounts.services import create_user

    password = sys.stdin.readline().rstrip("\r\n")

    async def body(rt: Runtime) -> Any:
        async with transaction(rt.sessions) as session:
            return await create_user(
                session,
                rt.crypto,
                username=username,
                password=password,
                role=Role(role),
                school_id=school_id,
                class_ids=class_ids,
            )

    created = run(settings, body)
    emit({"id": str(created.id), "totp_secret": created.totp_secret})


@main.group("audit")
def audit_group() -> None:
    """The audit trail."""


@audit_group.command("verify")
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The audit public key(s) to trust (default: audit-signing.pub in the keys directory).",
)
@click.option(
    "--checkpoint-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoints to hold the database against, e.g. a copy collected by the anchor"
    " (default: CASEMGR_AUDIT_CHECKPOINT_FILE).",
)
@click.pass_obj
def audit_verify(settings: Settings, public_key: Path | None, checkpoint_file: Path | None) -> None:
    """Check the whole chain and the signed checkpoints; exit 1 when anything is wrong."""
    from casemgr.crypto.keyring import AUDIT_PUBLIC_FILE, read_audit_public_keys

    try:
        trusted = read_audit_public_keys(public_key or settings.keys_dir / AUDIT_PUBLIC_FILE)
    except KeyRingError as exc:
        fail(str(exc))

    async def body(rt: Runtime) -> audit.VerifyResult:
        async with rt.sessions() as session:
            result = await audit.verify_chain(
                session,
                trusted,
                checkpoint_file or settings.checkpoint_file,
                seal_deadline=settings.seal_deadline,
            )
        if result.ok:
            async with transaction(rt.sessions) as session:
                await audit.record(
                    session,
                    audit.Action.AUDIT_VERIFY,
                    actor=None,
                    resource_type="audit",
                    detail={"ok": True, "checked": result.checked},
                )
        return result

    result = run(settings, body, need_keys=False)
    if not result.ok:
        err.print(
            Text.assemble(("audit trail damaged:", "red"), " ", result.reason or ""),
            highlight=False,
        )
    emit(result.as_dict())
    sys.exit(0 if result.ok else 1)


@audit_group.command("checkpoint")
@click.option(
    "--adopt-unanchored",
    is_flag=True,
    help="Seal a chain that no checkpoint anchors although its events are past the seal"
    " deadline (after checking it by other means); the adoption is itself audited.",
)
@click.pass_obj
def audit_checkpoint(settings: Settings, adopt_unanchored: bool) -> None:
    """Sign the chain's tip now (the service also does this periodically).

    Refuses (exit 1), signing nothing, when the chain does not extend the last checkpoint
    that the database, the checkpoint file and the pinned public keys agree on.
    """

    async def body(rt: Runtime) -> Any:
        assert rt.keyring is not None
        return await audit.seal(
            rt.sessions, rt.keyring, settings, adopt_unanchored=adopt_unanchored
        )

    checkpoint = run(settings, body)
    emit({"seq": checkpoint.seq if checkpoint else None})


@main.group()
def keys() -> None:
    """The key ring."""


@keys.command("rotate")
@click.option("--batch-size", default=2000, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--audit-signing",
    is_flag=True,
    help="Rotate the audit-signing key instead (the old key hands over in a signed record).",
)
@click.option(
    "--blind-index",
    is_flag=True,
    help="Rotate the blind-index key instead (lookup indexes are recomputed; resumable).",
)
@click.pass_obj
def keys_rotate(
    settings: Settings, batch_size: int, audit_signing: bool, blind_index: bool
) -> None:
    """Add a key-encryption key version and rewrap every data key (resumes an unfinished run).

    Fields still in the old unpadded format are resealed afterwards (as ``keys reseal``).
    """
    from casemgr.crypto.reseal import reseal
    from casemgr.crypto.rotation import rotate

    if audit_signing and blind_index:
        fail("give --audit-signing or --blind-index, not both")
    if audit_signing:
        rotate_audit_signing(settings)
        return
    if blind_index:
        rotate_blind_index_key(settings, batch_size)
        return

    async def body(rt: Runtime) -> Any:
        assert rt.keyring is not None
        with Progress(
            TextColumn("rewrapping data keys"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        ) as bar:
            task = bar.add_task("rotate", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = await rotate(rt.sessions, rt.keyring, batch_size=batch_size, progress=progress)
        resealed = await reseal(rt.sessions, rt.crypto)
        async with transaction(rt.sessions) as session:
            await audit.record(
                session,
                audit.Action.KEYS_ROTATE,
                actor=None,
                resource_type="key_ring",
                resource_id=f"kek-{result.target_version}",
                detail={
                    "rewrapped": result.rewrapped,
                    "resumed": result.resumed,
                    "resealed": sum(resealed.values()),
                },
            )
        return result, sum(resealed.values())

    result, resealed = run(settings, body)
    emit(
        {
            "kek_version": result.target_version,
            "rewrapped": result.rewrapped,
            "resumed": result.resumed,
            "resealed": resealed,
        }
    )


def rotate_blind_index_key(settings: Settings, batch_size: int) -> None:
    """``keys rotate --blind-index``: see casemgr.crypto.rotation (rerun to resume)."""
    from casemgr.crypto.rotation import rotate_blind_index

    async def body(rt: Runtime) -> Any:
        with Progress(
            TextColumn("recomputing lookup indexes"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
        ) as bar:
            task = bar.add_task("reindex", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = await rotate_blind_index(
                rt.sessions, rt.crypto, batch_size=batch_size, progress=progress
            )
        async with transaction(rt.sessions) as session:
            await audit.record(
                session,
                audit.Action.KEYS_ROTATE,
                actor=None,
                resource_type="key_ring",
                resource_id=f"blind-index-{result.target_version}",
                detail={
                    "kind": "blind_index",
                    "reindexed": result.rewrapped,
                    "resumed": result.resumed,
                },
            )
        return result

    result = run(settings, body)
    emit(
        {
            "blind_index_version": result.target_version,
            "reindexed": result.rewrapped,
            "resumed": result.resumed,
        }
    )


def rotate_audit_signing(settings: Settings) -> None:
    """``keys rotate --audit-signing``: see casemgr.audit.rotation (rerun to resume)."""
    from casemgr.audit.rotation import rotate_audit_signing_key

    async def body(rt: Runtime) -> Any:
        assert rt.keyring is not None
        return await rotate_audit_signing_key(rt.sessions, rt.keyring, settings)

    result = run(settings, body)
    emit(
        {
            "audit_signing_key_id": result.key_id,
            "previous_key_id": result.previous_key_id,
            "resumed": result.resumed,
            "checkpoint_seq": result.checkpoint_seq,
        }
    )


@keys.command("status")
@click.pass_obj
def keys_status(settings: Settings) -> None:
    """Show key versions and how many data keys each one wraps."""
    from casemgr.crypto.rotation import key_status

    async def body(rt: Runtime) -> Any:
        assert rt.keyring is not None
        async with rt.sessions() as session:
            return await key_status(session, rt.keyring)

    status = run(settings, body)
    emit(
        {
            "current_version": status.current_version,
            "versions_on_disk": status.versions_on_disk,
            "keys_by_version": {str(k): v for k, v in sorted(status.keys_by_version.items())},
            "destroyed_keys": status.destroyed_keys,
            "rotation_in_progress": status.rotation_in_progress,
            "versions_not_needed": status.versions_not_needed,
        }
    )


@keys.command("reseal")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.pass_obj
def keys_reseal(settings: Settings, batch_size: int) -> None:
    """Rewrite every format-1 (unpadded) field ciphertext as format 2 (resumable)."""
    from casemgr.crypto.reseal import reseal

    async def body(rt: Runtime) -> dict[str, int]:
        with Progress(TextColumn("resealing {task.description}"), console=err) as bar:
            task = bar.add_task("fields", total=None)

            def progress(table: str, done: int) -> None:
                bar.update(task, description=f"{table}: {done}")

            counts = await reseal(rt.sessions, rt.crypto, batch_size=batch_size, progress=progress)
        async with transaction(rt.sessions) as session:
            await audit.record(
                session,
                audit.Action.KEYS_RESEAL,
                actor=None,
                resource_type="key_ring",
                detail={"resealed": sum(counts.values())},
            )
        return counts

    counts = run(settings, body)
    emit({"resealed": counts})


@keys.command("retire")
@click.argument("version", type=click.IntRange(1))
@click.option("--blind-index", is_flag=True, help="Retire a blind-index key version instead.")
@click.pass_obj
def keys_retire(settings: Settings, version: int, blind_index: bool) -> None:
    """Destroy a key version that no stored key or index uses any more."""
    from casemgr.crypto.rotation import retire_blind_index_version, retire_kek_version

    async def body(rt: Runtime) -> str:
        assert rt.keyring is not None
        retire = retire_blind_index_version if blind_index else retire_kek_version
        async with transaction(rt.sessions) as session:
            name = await retire(session, rt.keyring, version)
            await audit.record(
                session,
                audit.Action.KEYS_RETIRE,
                actor=None,
                resource_type="key_ring",
                resource_id=name,
            )
        return name

    emit({"retired": run(settings, body)})


# -- care programme (issue 7) -----------------------------------------------------------


@main.group()
def retention() -> None:
    """Retention rules (per record kind, configured in the environment)."""


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="Count what is due; change nothing.")
@click.pass_obj
def retention_run(settings: Settings, dry_run: bool) -> None:
    """Apply the retention rules: erase (crypto-shred) students past retention."""
    from casemgr.care.retention import run_retention

    async def body(rt: Runtime) -> dict[str, Any]:
        outcomes = await run_retention(rt.sessions, rt.crypto, settings, dry_run=dry_run)
        return {name: msgspec.to_builtins(outcome) for name, outcome in outcomes.items()}

    rules = run(settings, body)
    for name, outcome in rules.items():
        err.print(f"{name}: {outcome['due']} due, {outcome['applied']} applied", highlight=False)
    emit({"dry_run": dry_run, "rules": rules})


# -- school administration (issue 6) -------------------------------------------------------


@main.group()
def students() -> None:
    """Students."""


@students.command("import")
@click.option("--school-id", required=True, type=click.UUID)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def students_import(settings: Settings, school_id: uuid.UUID, file: Path) -> None:
    """Import a school's roster from a CSV or XLSX file (all rows or none)."""
    from casemgr.students.imports import RosterRejected, import_roster, open_roster, sniff

    async def body(rt: Runtime) -> Any:
        with (
            file.open("rb") as handle,
            Progress(
                TextColumn("importing students"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
            ) as bar,
        ):
            task = bar.add_task("import", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            media_type = sniff(handle.read(4))
            handle.seek(0)
            try:
                async with transaction(rt.sessions) as session:
                    return await import_roster(
                        session,
                        rt.crypto,
                        school_id,
                        open_roster(handle, media_type),
                        actor=None,
                        progress=progress,
                    )
            except RosterRejected as refused:
                return refused

    result = run(settings, body)
    if isinstance(result, DomainError):
        for item in result.extra["rejected"]:
            err.print(Text(f"row {item['row']}: {item['error']}"), highlight=False)
        emit({"created": 0, "rejected": result.extra["rejected"]})
        sys.exit(2)
    emit({"created": result.created, "rejected": []})


@main.group()
def year() -> None:
    """School years."""


@year.command("rollover")
@click.option("--school-id", required=True, type=click.UUID)
@click.option("--to", "to_school_year", required=True, help="The new school year, e.g. 2027-2028.")
@click.option("--dry-run", is_flag=True, help="Show the plan and change nothing.")
@click.pass_obj
def year_rollover(
    settings: Settings, school_id: uuid.UUID, to_school_year: str, dry_run: bool
) -> None:
    """Move every class up a grade into the new school year; the top grade leaves."""
    from casemgr.schools.rollover import rollover

    async def body(rt: Runtime) -> Any:
        async with transaction(rt.sessions) as session:
            return await rollover(session, rt.crypto, school_id, to_school_year, dry_run=dry_run)

    plan = run(settings, body)
    for step in plan.classes:
        target = (
            "leaves" if step.action == "leave" else f"-> {step.to_name} (grade {step.to_grade})"
        )
        err.print(
            Text(f"{step.name} (grade {step.grade}, {step.students} students) {target}"),
            highlight=False,
        )
    emit(msgspec.to_builtins(plan))


# -- psychological screening (issue 8) -------------------------------------------------------


@main.group()
def instruments() -> None:
    """Screening instruments (definitions as data)."""


@instruments.command("check")
@click.argument(
    "directory",
    required=False,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.pass_obj
def instruments_check(settings: Settings, directory: Path | None) -> None:
    """Check a school's own instrument definitions (default: CASEMGR_INSTRUMENTS_DIR).

    Prints each problem (file and rule) to stderr and exits 1 when there is any.
    """
    from casemgr.screening.instruments import load_catalogue

    folder = directory if directory is not None else settings.instruments_dir
    catalogue = load_catalogue(folder)
    for problem in catalogue.problems:
        err.print(Text.assemble(("refused:", "red"), " ", problem), highlight=False, soft_wrap=True)
    emit(
        {
            "ok": not catalogue.problems,
            "directory": None if folder is None else str(folder),
            "instruments": sorted(catalogue.instruments),
            "problems": catalogue.problems,
        }
    )
    if catalogue.problems:
        sys.exit(1)


# -- backups (issue 11): casemgr.backup ------------------------------------------------------


def read_passphrase(passphrase_file: Path | None, passphrase_stdin: bool) -> bytes:
    if (passphrase_file is None) == (not passphrase_stdin):
        fail("give the passphrase with --passphrase-file PATH or --passphrase-stdin")
    if passphrase_file is not None:
        return passphrase_file.read_bytes().rstrip(b"\r\n")
    return sys.stdin.buffer.readline().rstrip(b"\r\n")


def passphrase_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--passphrase-stdin", is_flag=True, help="Read the key-ring passphrase from stdin."
    )(command)
    return click.option(
        "--passphrase-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Read the key-ring passphrase from this file (its first line).",
    )(command)


@main.command()
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--keys",
    "keys_only",
    is_flag=True,
    help="Back up the key ring instead, encrypted under a passphrase, to the file DEST."
    " Never store it with the database backups.",
)
@passphrase_options
@click.pass_obj
def backup(
    settings: Settings,
    dest: Path,
    keys_only: bool,
    passphrase_file: Path | None,
    passphrase_stdin: bool,
) -> None:
    """Back up the database (consistent while the service runs) to the new directory DEST."""
    from casemgr.backup import BackupError, backup_database, backup_keys

    if keys_only:
        passphrase = read_passphrase(passphrase_file, passphrase_stdin)
        created = False

        async def keys_body(rt: Runtime) -> dict[str, Any]:
            nonlocal created
            # The trace and the copy go together: no event, no copy (SPEC P4).
            async with transaction(rt.sessions) as session:
                await audit.record(
                    session,
                    audit.Action.KEYS_BACKUP,
                    actor=None,
                    resource_type="key_ring",
                    detail={"kek_versions": KeyRing(settings.keys_dir).kek_versions},
                )
                header = await asyncio.to_thread(backup_keys, settings.keys_dir, dest, passphrase)
                created = True
            return header

        try:
            header = run(settings, keys_body)
        except BackupError as exc:
            fail(str(exc), code=1)
        except BaseException:
            if created:  # written, but its event was not: no copy without its trace
                dest.unlink(missing_ok=True)
            raise
        err.print(
            "Keep this file and its passphrase apart, and never with the database backups.",
            highlight=False,
        )
        emit({"keys_backup": str(dest), "kek_versions": header["kek_versions"]})
        return

    async def body(rt: Runtime) -> Any:
        assert rt.keyring is not None
        result = await backup_database(settings, rt.keyring, dest)
        async with transaction(rt.sessions) as session:
            await audit.record(
                session,
                audit.Action.BACKUP_CREATE,
                actor=None,
                resource_type="backup",
                detail={
                    "backend": result.manifest["backend"],
                    "head_seq": result.manifest["audit"]["head_seq"],
                },
            )
        return result

    try:
        result = run(settings, body)
    except BackupError as exc:
        fail(str(exc), code=1)
    except DBAPIError as exc:
        fail(f"the database could not be backed up ({type(exc.orig).__name__})", code=1)
    manifest = result.manifest
    emit(
        {
            "backup": str(result.path),
            "backend": manifest["backend"],
            "schema_revision": manifest["schema_revision"],
            "audit_head_seq": manifest["audit"]["head_seq"],
            "kek_versions": manifest["keys"]["kek_versions"],
            "created_at": manifest["created_at"],
        }
    )


@main.command()
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--keys",
    "keys_only",
    is_flag=True,
    help="Restore a key-ring backup (the file SRC) into CASEMGR_KEYS_DIR, which must be empty.",
)
@passphrase_options
@click.option(
    "--shred-log",
    "shred_logs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Another copy of the shred log to apply (repeatable), e.g. from a newer backup.",
)
@click.option(
    "--no-shred-log",
    is_flag=True,
    help="Restore although no shred log is at hand (students erased later come back).",
)
@click.option(
    "--replace", is_flag=True, help="SQLite: move the existing database file aside first."
)
@click.pass_obj
def restore(
    settings: Settings,
    src: Path,
    keys_only: bool,
    passphrase_file: Path | None,
    passphrase_stdin: bool,
    shred_logs: tuple[Path, ...],
    no_shred_log: bool,
    replace: bool,
) -> None:
    """Restore the database from the backup directory SRC (stop the service first).

    Checks the backup, and that the key ring opens it, before anything is restored; then
    destroys again the keys of students erased since, and verifies the audit trail.
    """
    from casemgr.backup import BackupError, restore_database, restore_keys

    if keys_only:
        passphrase = read_passphrase(passphrase_file, passphrase_stdin)
        try:
            written = restore_keys(src, settings.keys_dir, passphrase)
        except (BackupError, KeyRingError) as exc:
            fail(str(exc), code=1)
        note_key_restore(settings, written)
        emit({"keys_restored": written, "keys_dir": str(settings.keys_dir)})
        return

    try:
        keyring = KeyRing(settings.keys_dir)
    except KeyRingError as exc:
        fail(str(exc))

    try:
        result = asyncio.run(
            restore_database(
                settings,
                keyring,
                src,
                shred_logs=list(shred_logs),
                without_shred_log=no_shred_log,
                replace=replace,
                progress=lambda message: err.print(message, highlight=False),
            )
        )
    except BackupError as exc:
        fail(str(exc), code=1)
    except DBAPIError as exc:
        fail(f"the restore failed in the database ({type(exc.orig).__name__})", code=1)
    for note in result.notes:
        warn(note)
    if result.checkpoint_file_moved_to is not None:
        err.print(
            "The checkpoints written after the backup are kept in"
            f" {result.checkpoint_file_moved_to} (the external anchor holds them too).",
            highlight=False,
        )
    emit(
        {
            "restored": True,
            "backup_created_at": result.manifest["created_at"],
            "audit_head_seq": result.manifest["audit"]["head_seq"],
            "shreds_replayed": result.replayed,
            "previous_database": (
                None
                if result.previous_database_moved_to is None
                else str(result.previous_database_moved_to)
            ),
            "audit": result.verify.as_dict(),
        }
    )
    sys.exit(0 if result.verify.ok else 1)


def note_key_restore(settings: Settings, written: list[str]) -> None:
    """Record the key restore in the trail when a migrated database is there to take it."""

    async def body(rt: Runtime) -> None:
        async with transaction(rt.sessions) as session:
            await audit.record(
                session,
                audit.Action.KEYS_RESTORE,
                actor=None,
                resource_type="key_ring",
                detail={"files": len(written)},
            )

    async def attempt() -> bool:
        runtime = Runtime(settings)
        try:
            if await _audit_head(runtime) is None:
                return False
            await body(runtime)
            await audit.seal(runtime.sessions, KeyRing(settings.keys_dir), settings)
            return True
        finally:
            await runtime.engine.dispose()

    try:
        recorded = asyncio.run(attempt())
    except (DBAPIError, OSError, audit.CheckpointRefused) as exc:
        warn(f"the key restore was not recorded in the audit trail: {type(exc).__name__}")
        return
    if not recorded:
        warn("no database to record the key restore in yet: `casemgr restore` records its own")
