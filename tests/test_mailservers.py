"""The test mail servers themselves: Dovecot takes APPENDs, aiosmtpd keeps mail."""

from __future__ import annotations

import smtplib
from pathlib import Path

from tests.mailservers import Dovecot, SmtpServer

CORPUS = Path(__file__).parent / "mail_corpus"


def test_dovecot_appends_unseen_mail(dovecot: Dovecot) -> None:
    dovecot.append((CORPUS / "plain.eml").read_bytes())
    dovecot.append((CORPUS / "base64.eml").read_bytes())
    flags = dovecot.flags()
    assert sorted(flags) == [1, 2]
    assert all("\\Seen" not in value for value in flags.values())


def test_smtp_server_keeps_and_rejects(smtp_server: SmtpServer) -> None:
    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
        client.sendmail(
            "a@mail.example.net", ["b@mail.example.net"], b"Subject: x\r\n\r\nhi\r\n"
        )
    received = smtp_server.wait_for(1)
    assert received[0].recipients == ["b@mail.example.net"]
    assert received[0].message["subject"] == "x"
    smtp_server.set_down(True)
    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
        try:
            client.sendmail("a@mail.example.net", ["b@mail.example.net"], b"\r\nhi\r\n")
        except smtplib.SMTPDataError as error:
            assert error.smtp_code == 421
        else:
            raise AssertionError("the server accepted mail while down")
    assert len(smtp_server.messages) == 1
