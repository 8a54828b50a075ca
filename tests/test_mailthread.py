"""Reply tokens, sender hashes and outgoing mail, without servers."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.mailparse import _ADDRESS, normalise_address, parse_mail
from relay.mailthread import (
    compose,
    new_message_id,
    reply_subject,
    reply_token,
    sender_hash,
    tokens_in,
)

SERVICE = "help@vso.example.org"
SECRET = "k" * 40


def test_reply_token_is_stable_and_keyed() -> None:
    token = reply_token(SECRET, "conversation-1")
    assert token == reply_token(SECRET, "conversation-1")
    assert len(token) == 26
    assert token != reply_token(SECRET, "conversation-2")
    assert token != reply_token("j" * 40, "conversation-1")


def test_sender_hash_ignores_case_only() -> None:
    assert sender_hash(SECRET, "Maria@Mail.example.net") == sender_hash(
        SECRET, "maria@mail.example.net"
    )
    assert sender_hash(SECRET, "maria@mail.example.net") != sender_hash(
        SECRET, "eve@mail.example.net"
    )


def mail_with(headers: str) -> bytes:
    return (headers + "From: a@mail.example.net\r\n\r\nHello\r\n").encode()


def test_tokens_in_plus_address_and_references() -> None:
    token = reply_token(SECRET, "c1")
    other = reply_token(SECRET, "c2")
    parsed = parse_mail(
        mail_with(
            f"To: Help <help+{token}@vso.example.org>\r\n"
            f"In-Reply-To: <{other}.0123abcd@vso.example.org>\r\n"
        ),
        10_000,
    )
    assert tokens_in(parsed, SERVICE) == [token, other]


@pytest.mark.parametrize(
    "headers",
    [
        "To: help+{token}@elsewhere.example\r\n",
        "To: other+{token}@vso.example.org\r\n",
        "To: help+{token}x@vso.example.org\r\n",
        "In-Reply-To: <{token}.1@elsewhere.example>\r\n",
        "References: <x{token}.1@vso.example.org>\r\n",
    ],
)
def test_tokens_in_ignores_other_addresses(headers: str) -> None:
    token = reply_token(SECRET, "c1")
    parsed = parse_mail(mail_with(headers.format(token=token)), 10_000)
    assert tokens_in(parsed, SERVICE) == []


def test_reply_subject_adds_re_once() -> None:
    assert reply_subject("Help") == "Re: Help"
    assert reply_subject("RE: Help") == "RE: Help"
    assert reply_subject("") == "Re: Your message"
    assert reply_subject("a\r\nBcc: x@y.example") == "Re: a Bcc: x@y.example"


def test_compose_threads_and_marks_automatic() -> None:
    token = reply_token(SECRET, "c1")
    message_id = new_message_id(token, SERVICE)
    raw = compose(
        service_address=SERVICE,
        service_name="Victim Support",
        token=token,
        recipient="maria@mail.example.net",
        subject="Question",
        body="Line one\nLine two",
        message_id=message_id,
        references=[f"r{number}@mail.example.net" for number in range(30)],
        automatic=True,
    )
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    message = message_from_bytes(raw, policy=policy.default)
    assert message["Message-ID"] == message_id
    assert message["Reply-To"].addresses[0].addr_spec == f"help+{token}@vso.example.org"
    assert message["In-Reply-To"] == "<r29@mail.example.net>"
    assert len(message["References"].split()) == 20
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["Subject"] == "Re: Question"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.text(max_size=60), st.text(max_size=500))
def test_compose_never_breaks_headers(subject: str, name: str, body: str) -> None:
    raw = compose(
        service_address=SERVICE,
        service_name=name or "x",
        token=reply_token(SECRET, "c1"),
        recipient="maria@mail.example.net",
        subject=subject,
        body=body,
        message_id=new_message_id(None, SERVICE),
        references=["a@mail.example.net"],
        automatic=False,
    )
    head = raw.split(b"\r\n\r\n", 1)[0]
    names = [
        line.split(b":", 1)[0].lower()
        for line in head.split(b"\r\n")
        if line[:1] not in (b" ", b"\t")
    ]
    assert sorted(names) == sorted(
        [
            b"from",
            b"to",
            b"reply-to",
            b"subject",
            b"message-id",
            b"date",
            b"in-reply-to",
            b"references",
            b"auto-submitted",
            b"content-type",
            b"content-transfer-encoding",
            b"mime-version",
        ]
    )


@settings(max_examples=200, deadline=None)
@given(st.from_regex(_ADDRESS, fullmatch=True) | st.text(max_size=80))
def test_compose_takes_every_normalised_address(text: str) -> None:
    address = normalise_address(text)
    if address is None:
        return
    raw = compose(
        service_address=SERVICE,
        service_name="Victim Support",
        token=None,
        recipient=address,
        subject="s",
        body="b",
        message_id=new_message_id(None, SERVICE),
        references=[],
        automatic=False,
    )
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["To"].addresses[0].addr_spec == address
