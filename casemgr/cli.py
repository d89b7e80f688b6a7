"""The ``casemgr`` command line. Machine-readable results go to stdout as one JSON line;
progress and human-readable notes go to stderr."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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


def fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    sys.exit(code)


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
        return Crypto(self.keyring)


def run(
    settings: Settings, body: Callable[[Runtime], Awaitable[T]], *, need_keys: bool = True
) -> T:
    async def main() -> T:
        runtime = Runtime(settings, need_keys=need_keys)
        try:
            return await body(runtime)
        finally:
            await runtime.engine.dispose()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        fail(
            exc.detail
            + "".join(f"\n  {e['field']}: {e['message']}" for e in exc.extra.get("errors", []))
        )
    except KeyRingError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


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


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.pass_obj
def serve(settings: Settings, host: str, port: int) -> None:
    """Run the web service."""
    import uvicorn

    from casemgr.app import create_app

    try:
        app = create_app(settings)
    except KeyRingError as exc:
        fail(str(exc))
    uvicorn.run(app, host=host, port=port, proxy_headers=True, server_header=False)


@main.command()
@click.option("--if-empty", is_flag=True, help="Do nothing (exit 0) when the database has data.")
@click.pass_obj
def demo(settings: Settings, if_empty: bool) -> None:
    """Fill an empty database with a synthetic county and print one login per role, once."""
    from casemgr.demo import DatabaseNotEmpty, seed

    async def body(rt: Runtime) -> Any:
        return await seed(rt.sessions, rt.crypto)

    try:
        logins = run(settings, body)
    except DatabaseNotEmpty:
        if if_empty:
            err.print("The database already has data; demo logins were printed when it was seeded.")
            return
        fail("the database is not empty; the demo only fills an empty one")
    from rich.table import Table

    table = Table(title="Demo logins (shown once; the data is synthetic)")
    for column in ("role", "username", "password", "TOTP secret"):
        table.add_column(column, overflow="fold")
    for login in logins:
        table.add_row(
            login["role"], login["username"], login["password"], login["totp_secret"] or "-"
        )
    err.print(table)
    emit({"logins": logins})


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
@click.pass_obj
def audit_verify(settings: Settings) -> None:
    """Check the whole chain and the signed checkpoints; exit 1 when anything is wrong."""

    async def body(rt: Runtime) -> audit.VerifyResult:
        assert rt.keyring is not None
        async with rt.sessions() as session:
            result = await audit.verify_chain(
                session, rt.keyring.audit_public_key, settings.checkpoint_file
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

    result = run(settings, body)
    if not result.ok:
        err.print(f"[red]audit trail damaged:[/red] {result.reason}", highlight=False)
    emit(result.as_dict())
    sys.exit(0 if result.ok else 1)


@audit_group.command("checkpoint")
@click.pass_obj
def audit_checkpoint(settings: Settings) -> None:
    """Sign the chain's tip now (the service also does this periodically)."""

    async def body(rt: Runtime) -> Any:
        assert rt.keyring is not None
        return await audit.write_checkpoint(
            rt.sessions, rt.keyring.audit_signing_key, settings.checkpoint_file
        )

    checkpoint = run(settings, body)
    emit({"seq": checkpoint.seq if checkpoint else None})


@main.group()
def keys() -> None:
    """The key ring."""


@keys.command("rotate")
@click.option("--batch-size", default=2000, show_default=True, type=click.IntRange(1, 100_000))
@click.pass_obj
def keys_rotate(settings: Settings, batch_size: int) -> None:
    """Add a key-encryption key version and rewrap every data key (resumes an unfinished run)."""
    from casemgr.crypto.rotation import rotate

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
        async with transaction(rt.sessions) as session:
            await audit.record(
                session,
                audit.Action.KEYS_ROTATE,
                actor=None,
                resource_type="key_ring",
                resource_id=f"kek-{result.target_version}",
                detail={"rewrapped": result.rewrapped, "resumed": result.resumed},
            )
        return result

    result = run(settings, body)
    emit(
        {
            "kek_version": result.target_version,
            "rewrapped": result.rewrapped,
            "resumed": result.resumed,
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
