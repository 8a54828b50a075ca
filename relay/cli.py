"""The ``vso`` command: serve the relay, manage volunteers and partner sites."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import logging
import re
import socket
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay import auth, collector
from relay.backup import BackupError, back_up
from relay.casestore import CaseStore
from relay.crypto import DataCipher, load_cipher, new_key_text
from relay.demo import ensure_demo
from relay.i18n import DEFAULT_LANGUAGE, LANGUAGES
from relay.logs import configure_logging
from relay.mailimap import MailError
from relay.mailsmtp import check_servers
from relay.mailstore import reseal_mail
from relay.passwords import check_new_password
from relay.resources import ContentError, load_content, stale_report
from relay.retention import purge_expired
from relay.settings import Settings, SettingsError, load_settings
from relay.sites import (
    DEFAULT_EXIT_URL,
    check_exit_url,
    embed_snippet,
    inline_snippet,
    new_site_key,
    normalise_origin,
)
from relay.store import Store, StoreError

logger = logging.getLogger("relay.cli")

USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
DISPLAY_NAME_MAX_CHARS = 40
SITE_NAME_MAX_CHARS = 100
# On SIGTERM uvicorn stops accepting, closes sockets with 1012 and waits this long
# for them to finish before the lifespan stores what is pending and exits.
SHUTDOWN_GRACE_SECONDS = 10


class CommandError(Exception):
    """A command cannot run as requested; the message states why and what to do."""


def _write(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def check_name(name: str, label: str, max_chars: int) -> str:
    """Return a trimmed name that visitors will see; raise ``CommandError`` if unusable.

    Control and format characters (which could hide or reorder text) are rejected.
    """
    name = name.strip()
    if not name or len(name) > max_chars:
        raise CommandError(f"The {label} must have 1 to {max_chars} characters.")
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in name):
        raise CommandError(f"The {label} contains control or format characters.")
    return name


async def _with_store(settings: Settings, cipher: DataCipher | None = None) -> Store:
    try:
        return await Store.open(settings.database, cipher)
    except StoreError as error:
        raise CommandError(str(error)) from error


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandError("No terminal to ask for the password; use --password-stdin.")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat the password: ") != first:
        raise CommandError("The two passwords differ.")
    return first


async def volunteer_add(settings: Settings, args: argparse.Namespace) -> None:
    username = args.username.strip().lower()
    if not USERNAME_PATTERN.fullmatch(username):
        raise CommandError(
            f"The username {args.username!r} is invalid; use 2 to 64 lowercase letters,"
            " digits, dots, dashes or underscores, starting with a letter or digit."
        )
    display_name = check_name(args.display_name, "display name", DISPLAY_NAME_MAX_CHARS)
    password = _read_password(args.password_stdin)
    try:
        if args.role == "admin":
            check_new_password(password, username, display_name)
        password_hash = auth.hash_password(password)
    except ValueError as error:
        raise CommandError(str(error)) from None
    store = await _with_store(settings)
    try:
        volunteer = await store.add_volunteer(
            username, display_name, password_hash, args.capacity, args.role
        )
    except ValueError as error:
        raise CommandError(str(error)) from None
    finally:
        await store.close()
    _write(
        f"Added volunteer {volunteer.username} (shown to visitors as {display_name})."
    )


async def admin_add(settings: Settings, args: argparse.Namespace) -> None:
    """Add an admin account: the first one, or one more when all are locked out."""
    args.role = "admin"
    await volunteer_add(settings, args)
    _write("Admins set up two-factor sign-in with an authenticator app at their first")
    _write(f"sign-in at {settings.public_url}/dashboard.")


async def volunteer_list(settings: Settings, args: argparse.Namespace) -> None:
    store = await _with_store(settings)
    try:
        volunteers = await store.list_volunteers()
    finally:
        await store.close()
    if not volunteers:
        _write("No volunteers yet; add one with `vso volunteer add`.")
        return
    _write(f"{'username':<24} {'display name':<24} {'role':<10} capacity  active")
    for volunteer in volunteers:
        _write(
            f"{volunteer.username:<24} {volunteer.display_name:<24}"
            f" {volunteer.role:<10} {volunteer.capacity:>8}"
            f"  {'yes' if volunteer.active else 'no'}"
        )


async def site_add(settings: Settings, args: argparse.Namespace) -> None:
    name = check_name(args.name, "site name", SITE_NAME_MAX_CHARS)
    try:
        origins = sorted({normalise_origin(origin) for origin in args.origin})
        exit_url = check_exit_url(args.exit_url)
    except ValueError as error:
        raise CommandError(str(error)) from None
    store = await _with_store(settings)
    try:
        site = await store.add_site(
            new_site_key(), name, origins, exit_url, args.language
        )
    finally:
        await store.close()
    _write(f"Added site {site.name} with key {site.key}. Paste this into its pages:")
    _write()
    _write(embed_snippet(settings.public_url, site.key, site.language))
    _write()
    _write("Or, to show the chat inside the page (works without scripts too):")
    _write()
    _write(inline_snippet(settings.public_url, site.key, site.language))


async def site_list(settings: Settings, args: argparse.Namespace) -> None:
    store = await _with_store(settings)
    try:
        sites = await store.list_sites()
    finally:
        await store.close()
    if not sites:
        _write("No sites yet; add one with `vso site add`.")
        return
    for site in sites:
        _write(f"{site.name} (key {site.key})")
        _write(f"  allowed origins: {', '.join(site.origins)}")
        _write(f"  Quick exit goes to: {site.exit_url}")
        _write(f"  default language: {site.language}")
        _write("  embed snippet:")
        snippet = embed_snippet(settings.public_url, site.key, site.language)
        for line in snippet.splitlines():
            _write(f"    {line}")
        _write("  inline snippet (the chat inside the page):")
        _write(f"    {inline_snippet(settings.public_url, site.key, site.language)}")
        _write()


async def _prepare_demo(settings: Settings) -> None:
    store = await _with_store(settings)
    try:
        account = await ensure_demo(store, settings)
    finally:
        await store.close()
    if account is not None:
        _write()
        _write("Demo ready. This sign-in is shown once:")
        _write(f"  dashboard:  {settings.public_url}/dashboard")
        _write(f"  username:   {account.username}")
        _write(f"  password:   {account.password}")
        _write(f"  demo page:  {settings.public_url}/demo")
        _write()


def _check_port_free(host: str, port: int) -> None:
    """Fail before printing anything when another process listens on the port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise CommandError(f"VSO_HOST={host!r} cannot be resolved: {error}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise CommandError(
                f"Cannot listen on {host}:{port}: {error.strerror}. Stop the other"
                " server or set VSO_PORT to a free port."
            ) from None


def _cipher(settings: Settings) -> DataCipher:
    try:
        return load_cipher(settings.data_key, settings.data_key_file, settings.database)
    except ValueError as error:
        raise CommandError(str(error)) from None


async def purge(settings: Settings, args: argparse.Namespace) -> None:
    days = settings.retention_days if args.days is None else args.days
    store = await _with_store(settings)
    try:
        deleted = await purge_expired(store, days)
    except StoreError as error:
        raise CommandError(str(error)) from None
    finally:
        await store.close()
    _write(f"Deleted {deleted} conversations closed more than {days} days ago.")


async def backup(settings: Settings, args: argparse.Namespace) -> None:
    try:
        copy = await asyncio.to_thread(back_up, settings.database, args.path)
    except BackupError as error:
        raise CommandError(str(error)) from None
    _write(
        f"Backed up {settings.database} to {copy.path}: {copy.size_bytes} bytes,"
        f" {copy.conversations} conversations, {copy.messages} messages."
    )
    _write(
        "Its messages are encrypted with the data key (VSO_DATA_KEY, VSO_DATA_KEY_FILE"
        " or data_key beside the database): keep a copy of the key apart from the"
        " backup."
    )


async def rotate_key(settings: Settings, args: argparse.Namespace) -> None:
    cipher = _cipher(settings)
    store = await _with_store(settings, cipher)
    try:
        count = await store.reseal_messages()
        secrets_count = await store.reseal_totp_secrets()
        mail_count = await reseal_mail(store)
        notes_count = await CaseStore(store).reseal_case_notes()
    except StoreError as error:
        raise CommandError(str(error)) from None
    finally:
        await store.close()
    _write(
        f"Sealed {count} messages, {secrets_count} TOTP secrets, {mail_count}"
        f" e-mail values and {notes_count} case notes with key"
        f" {cipher.current_key_id}. Older keys can now be removed."
    )


async def mail_check(settings: Settings, args: argparse.Namespace) -> None:
    try:
        lines = await check_servers(settings)
    except MailError as error:
        raise CommandError(str(error)) from None
    for line in lines:
        _write(line)


async def new_data_key(settings: Settings, args: argparse.Namespace) -> None:
    _write(new_key_text())


async def content_check(settings: Settings, args: argparse.Namespace) -> None:
    """Check the hub's content; fail when it is invalid or details are too old."""
    try:
        content = load_content(settings.content_dir)
    except ContentError as error:
        raise CommandError(str(error)) from None
    lines = stale_report(content, args.today, settings.content_max_age_days)
    for line in lines:
        _write(line)
    if lines:
        raise CommandError(
            f"{len(lines)} directory entries need checking: verify them with each"
            " service, then update 'checked' in the file."
        )
    _write(f"All {len(content.services)} directory entries were checked recently.")


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Return the keyword arguments ``vso serve`` gives ``uvicorn.run``.

    The benchmark starts the relay with ``vso serve``, so it measures these too.
    """
    from relay import upgrade

    return {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        # None keeps uvicorn from raising its loggers to DEBUG past the floor
        # that configure_logging puts on them; the root level decides.
        "log_level": None,
        # Access logs would record visitors' addresses.
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        # uvloop when installed; httptools and websockets come with
        # uvicorn[standard]. Both protocol classes are uvicorn's, changed to
        # keep frames that a client sends right behind its handshake request.
        "loop": "auto",
        "http": upgrade.HttpProtocol,
        "ws": upgrade.WebSocketProtocol,
        "ws_max_size": settings.max_frame_bytes,
        # Compression multiplies the memory of each connection for short frames.
        "ws_per_message_deflate": False,
        "ws_ping_interval": settings.ws_ping_seconds,
        "ws_ping_timeout": settings.ws_ping_seconds,
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_SECONDS,
    }


def serve(settings: Settings) -> None:
    """Run the relay in uvicorn until SIGINT or SIGTERM.

    Raises ``CommandError`` when the port is taken or the data key is missing
    or invalid.
    """
    import uvicorn

    from relay.app import create_app

    _check_port_free(settings.host, settings.port)
    asyncio.run(_check_data_key(settings, _cipher(settings)))
    try:
        load_content(settings.content_dir)
    except ContentError as error:
        raise CommandError(str(error)) from None
    if settings.demo:
        asyncio.run(_prepare_demo(settings))
    logger.info("listening on http://%s:%d", settings.host, settings.port)
    app = create_app(settings)
    collector.tune()
    uvicorn.run(app, **uvicorn_options(settings))


async def _check_data_key(settings: Settings, cipher: DataCipher) -> None:
    """Raise ``CommandError`` when no configured key opens the newest message.

    A database restored without its key, or started with another server's key,
    would otherwise serve chats whose history fails to load while new messages
    are sealed with a new key of which no copy exists.
    """
    if not settings.database.exists():
        return
    store = await _with_store(settings, cipher)
    try:
        body = await store.newest_message_body()
    except StoreError as error:
        raise CommandError(str(error)) from None
    finally:
        await store.close()
    stored_key_id = None if body is None else DataCipher.sealing_key_id(body)
    if stored_key_id is not None and not cipher.has_key(stored_key_id):
        raise CommandError(
            f"The newest message in {settings.database} was sealed with data key"
            f" {stored_key_id}, which is not configured. Put that key back in"
            " VSO_DATA_KEY, VSO_DATA_KEY_FILE or the data_key file beside the"
            " database; without it no stored message can be read."
        )


def _add_account_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that every command creating an account takes."""
    parser.add_argument(
        "--capacity",
        type=int,
        choices=range(1, 21),
        metavar="N",
        default=None,
        help="chats at once, 1 to 20 (default: VSO_DEFAULT_CAPACITY)",
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vso",
        description="Victim Support Online relay. Settings come from VSO_* variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the relay on VSO_HOST:VSO_PORT")

    volunteer = commands.add_parser("volunteer", help="manage volunteer accounts")
    volunteer_commands = volunteer.add_subparsers(dest="action", required=True)
    add = volunteer_commands.add_parser("add", help="add a volunteer")
    add.add_argument("username", help="sign-in name, never shown to visitors")
    add.add_argument(
        "--display-name", required=True, help="pseudonym shown to visitors"
    )
    _add_account_options(add)
    add.add_argument(
        "--role",
        choices=("volunteer", "supervisor", "admin"),
        default="volunteer",
        help="volunteer (the default), supervisor or admin; supervisors and admins"
        " must set up two-factor sign-in at their first sign-in",
    )
    volunteer_commands.add_parser("list", help="list volunteers")

    admin = commands.add_parser("admin", help="manage admin accounts")
    admin_commands = admin.add_subparsers(dest="action", required=True)
    admin_add_parser = admin_commands.add_parser(
        "add", help="add an admin, who then invites everyone else from the dashboard"
    )
    admin_add_parser.add_argument("username", help="sign-in name")
    admin_add_parser.add_argument(
        "--display-name", required=True, help="name shown to other staff and visitors"
    )
    _add_account_options(admin_add_parser)

    site = commands.add_parser("site", help="manage partner sites")
    site_commands = site.add_subparsers(dest="action", required=True)
    site_add_parser = site_commands.add_parser("add", help="add a partner site")
    site_add_parser.add_argument("name", help="the site's name, shown to visitors")
    site_add_parser.add_argument(
        "--origin",
        action="append",
        required=True,
        help="an origin allowed to embed the chat, e.g. https://www.example.org;"
        " repeat for several",
    )
    site_add_parser.add_argument(
        "--exit-url",
        default=DEFAULT_EXIT_URL,
        help="the neutral page Quick exit opens in place of the chat"
        f" (default: {DEFAULT_EXIT_URL})",
    )
    site_add_parser.add_argument(
        "--language",
        choices=sorted(LANGUAGES),
        default=DEFAULT_LANGUAGE,
        help="the language visitors see first; they can switch on the chat page"
        f" (default: {DEFAULT_LANGUAGE})",
    )
    site_commands.add_parser("list", help="list sites with their embed snippets")

    purge_parser = commands.add_parser(
        "purge", help="delete closed conversations older than the retention period"
    )
    purge_parser.add_argument(
        "--days",
        type=int,
        choices=range(0, 3651),
        metavar="N",
        default=None,
        help="delete conversations closed more than N days ago, 0 to 3650"
        " (default: VSO_RETENTION_DAYS)",
    )
    backup_parser = commands.add_parser(
        "backup",
        help="copy the database, while the relay runs, to a new file (mode 0600)",
    )
    backup_parser.add_argument(
        "path", type=Path, help="the new file; an existing file is never replaced"
    )
    commands.add_parser(
        "rotate-key",
        help="re-encrypt every stored message with the first configured data key",
    )
    commands.add_parser(
        "new-data-key", help="print a new random data key for VSO_DATA_KEY"
    )
    commands.add_parser(
        "mail-check",
        help="sign in to the VSO_MAIL_* IMAP and SMTP servers; fetches and sends"
        " nothing",
    )
    content = commands.add_parser("content", help="check the information hub")
    content_commands = content.add_subparsers(dest="action", required=True)
    check = content_commands.add_parser(
        "check",
        help="check the content files and list directory entries whose details"
        " are older than VSO_CONTENT_MAX_AGE_DAYS; exit status 1 when any is",
    )
    check.add_argument(
        "--today",
        type=_date,
        default=None,
        metavar="YYYY-MM-DD",
        help="the date to measure ages from (default: today in UTC)",
    )
    return parser


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; write it as YYYY-MM-DD."
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("info")
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.stderr.write(f"vso: invalid configuration: {error}\n")
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        try:
            serve(settings)
        except CommandError as error:
            sys.stderr.write(f"vso: {error}\n")
            return 1
        return 0
    if getattr(args, "capacity", 0) is None:
        args.capacity = settings.default_capacity
    handlers = {
        ("volunteer", "add"): volunteer_add,
        ("volunteer", "list"): volunteer_list,
        ("admin", "add"): admin_add,
        ("site", "add"): site_add,
        ("site", "list"): site_list,
        ("content", "check"): content_check,
    }
    commands = {
        "purge": purge,
        "backup": backup,
        "rotate-key": rotate_key,
        "new-data-key": new_data_key,
        "mail-check": mail_check,
    }
    handler = commands.get(args.command) or handlers[(args.command, args.action)]
    try:
        asyncio.run(handler(settings, args))
    except CommandError as error:
        sys.stderr.write(f"vso: {error}\n")
        return 1
    return 0
