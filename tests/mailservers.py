"""Real mail servers for tests: Dovecot for IMAP and aiosmtpd for SMTP.

Both listen on a free port of 127.0.0.1. Dovecot keeps its configuration, a
passwd-file with one user and that user's Maildir in a temporary folder of its
own, which the fixture removes when it stops the server.
"""

from __future__ import annotations

import grp
import imaplib
import ipaddress
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.relayserver import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
START_TIMEOUT = 15.0
MAIL_USER = "help"
MAIL_PASSWORD = "imap-test-password"
SERVICE_ADDRESS = "help@vso.example.org"

_UID = re.compile(rb"UID (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:{root}/mail/%u
mail_privileged_group =
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
service stats {{
  unix_listener stats-writer {{
    user = {user}
  }}
}}
"""


@dataclass
class Dovecot:
    """A running Dovecot with one mailbox user.

    ``port`` serves IMAP (with STARTTLS when started with a certificate) and
    ``imaps_port`` IMAP over TLS, or 0 without a certificate.
    """

    root: Path
    port: int
    imaps_port: int = 0
    user: str = MAIL_USER
    password: str = MAIL_PASSWORD
    process: subprocess.Popen[bytes] | None = None

    def connect(self) -> imaplib.IMAP4:
        """Return an IMAP connection signed in as the mailbox user."""
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(self.user, self.password)
        return client

    def append(self, raw: bytes, mailbox: str = "INBOX") -> None:
        """Deliver ``raw`` into ``mailbox`` as unseen mail, as IMAP APPEND does."""
        client = self.connect()
        try:
            status, detail = client.append(mailbox, "", None, raw)
            if status != "OK":
                raise RuntimeError(f"APPEND failed: {detail!r}")
        finally:
            client.logout()

    def flags(self, mailbox: str = "INBOX") -> dict[int, str]:
        """Return each message's UID and its flags."""
        client = self.connect()
        try:
            client.select(mailbox, readonly=True)
            status, data = client.uid("FETCH", "1:*", "(FLAGS)")
            result: dict[int, str] = {}
            for item in data:
                if not isinstance(item, bytes):
                    continue
                uid = _UID.search(item)
                flags = _FLAGS.search(item)
                if uid is None or flags is None:
                    # An unsolicited update from another session's STORE.
                    continue
                result[int(uid.group(1))] = flags.group(1).decode()
            return result
        finally:
            client.logout()

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _account() -> tuple[str, str, int, int]:
    """Return the user, group and ids Dovecot runs as: ours, or nobody's as root."""
    if os.getuid() != 0:
        entry = pwd.getpwuid(os.getuid())
        return (
            entry.pw_name,
            grp.getgrgid(os.getgid()).gr_name,
            entry.pw_uid,
            os.getgid(),
        )
    # Dovecot refuses to serve mail as root.
    entry = pwd.getpwnam("nobody")
    return "nobody", grp.getgrgid(entry.pw_gid).gr_name, entry.pw_uid, entry.pw_gid


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 and localhost and its key;
    return their paths. Clients trust it by using the certificate as CA file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def start_dovecot(certificate: tuple[Path, Path] | None = None) -> Dovecot:
    """Write a configuration into a new folder, start Dovecot and wait for it.

    With a ``certificate`` (certificate and key paths) it serves TLS too.
    """
    if not os.path.exists(DOVECOT):
        raise RuntimeError(
            "dovecot is not installed; run `make test`, which installs"
            " Debian's dovecot-imapd"
        )
    root = Path(tempfile.mkdtemp(prefix="vso-dovecot-"))
    user, group, uid, gid = _account()
    port = free_port()
    for name in ("run", "state", "mail", "home"):
        (root / name).mkdir()
    (root / "users").write_text(f"{MAIL_USER}:{{PLAIN}}{MAIL_PASSWORD}\n")
    imaps_port = free_port() if certificate else 0
    ssl_lines = "ssl = no"
    if certificate:
        ssl_lines = (
            f"ssl = yes\nssl_cert = <{certificate[0]}\nssl_key = <{certificate[1]}"
        )
    (root / "dovecot.conf").write_text(
        _CONFIG.format(
            root=root,
            user=user,
            group=group,
            uid=uid,
            gid=gid,
            port=port,
            imaps_port=imaps_port,
            ssl=ssl_lines,
        )
    )
    if os.getuid() == 0:
        os.chmod(root, 0o755)
        for name in ("mail", "home"):
            os.chown(root / name, uid, gid)
    server = Dovecot(root=root, port=port, imaps_port=imaps_port)
    server.process = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=(root / "stderr.log").open("wb"),
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            stderr = (root / "stderr.log").read_text(errors="replace")
            raise RuntimeError(f"dovecot exited early:\n{stderr}\n{server.log()}")
        try:
            server.connect().logout()
            return server
        except (OSError, imaplib.IMAP4.error):
            time.sleep(0.05)
    stop_dovecot(server)
    raise RuntimeError(f"dovecot did not start in time:\n{server.log()}")


def stop_dovecot(server: Dovecot) -> None:
    """Stop Dovecot and remove its folder."""
    if server.process is not None and server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    shutil.rmtree(server.root, ignore_errors=True)


@dataclass
class Received:
    """One message the SMTP server accepted."""

    sender: str
    recipients: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Collector:
    """The aiosmtpd handler: stores every message, or rejects while ``down``."""

    messages: list[Received] = field(default_factory=list)
    down: bool = False
    changed: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.down:
            return "421 4.3.2 Service not available, closing transmission channel"
        content = envelope.original_content or b""
        with self.changed:
            self.messages.append(
                Received(
                    sender=str(envelope.mail_from),
                    recipients=[str(rcpt) for rcpt in envelope.rcpt_tos],
                    raw=bytes(content),
                )
            )
            self.changed.notify_all()
        return "250 OK"


class SmtpServer:
    """aiosmtpd on a free port of 127.0.0.1, capturing what the relay sends.

    With ``tls_context`` it offers STARTTLS and requires it before mail.
    """

    def __init__(self, tls_context: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self._collector = _Collector()
        options: dict[str, object] = {}
        if tls_context is not None:
            options = {"tls_context": tls_context, "require_starttls": True}
        self._controller = Controller(
            self._collector, hostname="127.0.0.1", port=self.port, **options
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[Received]:
        with self._collector.changed:
            return list(self._collector.messages)

    def set_down(self, down: bool) -> None:
        """Make every delivery fail with a temporary error, or succeed again."""
        self._collector.down = down

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Return the messages once at least ``count`` arrived; raise on timeout."""
        deadline = time.monotonic() + timeout
        with self._collector.changed:
            while len(self._collector.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {count} messages over SMTP, got"
                        f" {len(self._collector.messages)}"
                    )
                self._collector.changed.wait(remaining)
            return list(self._collector.messages)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A started Dovecot with an empty INBOX, stopped afterwards."""
    server = start_dovecot()
    try:
        yield server
    finally:
        stop_dovecot(server)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A started aiosmtpd that keeps what it receives, stopped afterwards."""
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
