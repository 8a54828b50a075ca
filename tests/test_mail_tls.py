"""Mail over TLS: IMAPS and IMAP STARTTLS from Dovecot, SMTP STARTTLS to
aiosmtpd, each verified against the certificate in VSO_MAIL_CA_FILE."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mailrelay import CORPUS, imports, wait_until
from tests.mailservers import (
    SERVICE_ADDRESS,
    Dovecot,
    SmtpServer,
    make_certificate,
    start_dovecot,
    stop_dovecot,
)
from tests.relayserver import RelayServer


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "tls"
    folder.mkdir()
    return make_certificate(folder)


@pytest.fixture
def tls_dovecot(certificate: tuple[Path, Path]) -> Iterator[Dovecot]:
    server = start_dovecot(certificate)
    try:
        yield server
    finally:
        stop_dovecot(server)


@pytest.fixture
def starttls_smtp(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server = SmtpServer(tls_context=context)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tls_relay(
    directory: Path,
    dovecot: Dovecot,
    smtp: SmtpServer,
    imap_tls: str,
    ca_file: Path | None,
) -> RelayServer:
    settings = {
        "mail_address": SERVICE_ADDRESS,
        "mail_poll_seconds": "1",
        "mail_imap_host": "127.0.0.1",
        "mail_imap_port": str(
            dovecot.imaps_port if imap_tls == "tls" else dovecot.port
        ),
        "mail_imap_tls": imap_tls,
        "mail_imap_user": dovecot.user,
        "mail_imap_password": dovecot.password,
        "mail_smtp_host": "127.0.0.1",
        "mail_smtp_port": str(smtp.port),
        "mail_smtp_tls": "starttls",
    }
    if ca_file is not None:
        settings["mail_ca_file"] = str(ca_file)
    return RelayServer(directory / "relay", **settings)


@pytest.mark.parametrize("imap_tls", ["tls", "starttls"])
def test_mail_over_tls_imports_and_sends(
    tmp_path: Path,
    certificate: tuple[Path, Path],
    tls_dovecot: Dovecot,
    starttls_smtp: SmtpServer,
    imap_tls: str,
) -> None:
    (tmp_path / "relay").mkdir()
    server = tls_relay(tmp_path, tls_dovecot, starttls_smtp, imap_tls, certificate[0])
    server.start()
    try:
        tls_dovecot.append((CORPUS / "attachment.eml").read_bytes())
        wait_until(lambda: len(imports(server)) == 1, what="the import")
        [notice] = starttls_smtp.wait_for(1)
        assert notice.recipients == ["maria.borg@mail.example.net"]
        assert "does not keep attachments" in notice.message.get_content()
    finally:
        server.stop()


def test_mail_untrusted_certificate_refused(
    tmp_path: Path, tls_dovecot: Dovecot, starttls_smtp: SmtpServer
) -> None:
    (tmp_path / "relay").mkdir()
    server = tls_relay(tmp_path, tls_dovecot, starttls_smtp, "tls", None)
    server.start()
    try:
        tls_dovecot.append((CORPUS / "plain.eml").read_bytes())
        wait_until(
            lambda: (
                "fetching mail failed" in server.log()
                and "CERTIFICATE_VERIFY_FAILED" in server.log()
            ),
            what="a refused certificate",
        )
        assert imports(server) == []
    finally:
        server.stop()


def test_mail_check_signs_in_without_fetching(
    tmp_path: Path,
    certificate: tuple[Path, Path],
    tls_dovecot: Dovecot,
    starttls_smtp: SmtpServer,
) -> None:
    (tmp_path / "relay").mkdir()
    server = tls_relay(tmp_path, tls_dovecot, starttls_smtp, "tls", certificate[0])
    tls_dovecot.append((CORPUS / "plain.eml").read_bytes())
    result = server.cli("mail-check")
    assert result.returncode == 0, result.stderr
    assert "IMAP: signed in at 127.0.0.1" in result.stdout
    assert "INBOX has 1 messages" in result.stdout
    assert "SMTP: connected to 127.0.0.1" in result.stdout
    assert all("\\Seen" not in flags for flags in tls_dovecot.flags().values())
    assert starttls_smtp.messages == []

    server.env["VSO_MAIL_IMAP_PASSWORD"] = "wrong-password"
    failed = server.cli("mail-check")
    assert failed.returncode == 1
    assert "IMAP sign-in as 'help' failed" in failed.stderr
