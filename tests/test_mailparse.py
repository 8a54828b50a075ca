"""The mail parser on the corpus in tests/mail_corpus, and fuzzed with Hypothesis."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.mailparse import (
    AUTO_REPLY,
    BOUNCE,
    BULK,
    PERSON,
    ParsedMail,
    clean_header,
    fold_quotes,
    html_to_text,
    parse_mail,
)

CORPUS = Path(__file__).parent / "mail_corpus"
LIMIT = 64 * 1024


def parse(name: str, limit: int = LIMIT) -> ParsedMail:
    return parse_mail((CORPUS / name).read_bytes(), limit)


def test_mailparse_plain_text() -> None:
    mail = parse("plain.eml")
    assert mail.kind == PERSON
    assert mail.sender == "maria.borg@mail.example.net"
    assert mail.sender_name == "Maria Borg"
    assert mail.subject == "Need to talk to someone"
    assert mail.message_id == "20261204201403.4711@mail.example.net"
    assert mail.text.startswith("Hello,\n\nSomeone broke into my car")
    assert mail.text.endswith("Thanks")
    assert not mail.quotes_folded
    assert mail.answerable


def test_mailparse_alternative_prefers_plain() -> None:
    mail = parse("alternative.eml")
    assert "<b>" not in mail.text
    assert "<div" not in mail.text
    assert "Am I entitled to compensation after an assault?" in mail.text
    assert mail.attachments == 0


def test_mailparse_html_only_becomes_text() -> None:
    mail = parse("html_only.eml")
    assert mail.text.startswith("My neighbour threatens me every day.")
    assert "What can I do & who can help?" in mail.text
    assert "- He shouts\n- He follows me" in mail.text
    for fragment in ("<", "alert", "color: red", "ignored title", "tracker"):
        assert fragment not in mail.text
    # The blockquote is history from an earlier mail.
    assert "old quoted text" not in mail.text
    assert mail.quotes_folded


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("quoted_printable.eml", "My sister was robbed in Ħamrun"),
        ("quoted_printable.eml", "Grazzi ħafna,\nŻaneta"),
        ("base64.eml", "I cannot sleep. — What should I do next?"),
        ("latin1.eml", "insulted at the café and the waiter saw it. À qui"),
        ("cp1252.eml", "with €200 in it. The police said “we’ll see” – is"),
    ],
)
def test_mailparse_charsets_and_encodings(name: str, expected: str) -> None:
    assert expected in parse(name).text


def test_mailparse_encoded_headers() -> None:
    assert parse("quoted_printable.eml").subject == "Il-ħtieġa ta' oħti"
    assert parse("quoted_printable.eml").sender_name == "Żaneta"
    assert parse("base64.eml").subject == "After the attack"
    assert parse("latin1.eml").subject == "Café incident"
    assert parse("latin1.eml").sender_name == "René"


@pytest.mark.parametrize(
    ("name", "kept", "folded"),
    [
        (
            "reply_gmail.eml",
            "Thank you for answering so fast. Yes, I would like to know more about\n"
            "the support you offer.",
            ("wrote:", "Dear Maria", "Someone broke into"),
        ),
        (
            "reply_gmail_wrapped.eml",
            "One more thing: can my partner write to you too?",
            ("wrote:", "help+", "Of course"),
        ),
        (
            "reply_outlook.eml",
            "Hi, Tuesday afternoon would suit me better.\n\nJoseph",
            ("Original Message", "From:", "when would you like"),
        ),
        (
            "reply_outlook_headers.eml",
            "I forgot to say: please do not leave a voicemail.",
            ("____", "Sent:", "when would you like"),
        ),
        (
            "reply_apple.eml",
            "Yes, that helps. I will think about reporting it.",
            ("iPhone", "wrote:", "here is what reporting"),
        ),
        (
            "reply_thunderbird.eml",
            "Thanks, I will collect the messages he sent me.",
            ("wrote:", "keep any messages"),
        ),
        (
            "signature.eml",
            "My court date is next month. Can someone come with me?",
            ("Senior Accountant", "+356", "-- "),
        ),
    ],
)
def test_mailparse_folds_history(name: str, kept: str, folded: tuple[str, ...]) -> None:
    mail = parse(name)
    assert mail.text == kept
    for fragment in folded:
        assert fragment not in mail.text
    assert mail.quotes_folded


def test_mailparse_keeps_inline_answer() -> None:
    mail = parse("inline_answer.eml")
    assert mail.text == (
        "> Dear Karl, a few questions so we can help:\n"
        ">\n"
        "> Are you safe at home right now?\n"
        "\n"
        "Yes, he moved out on Monday.\n"
        "\n"
        "> Have you kept the messages he sent?\n"
        "\n"
        "Most of them, not the voicemails."
    )
    assert "wrote:" not in mail.text
    assert "Would you like us to call you?" not in mail.text


def test_mailparse_counts_attachments_without_keeping_them() -> None:
    mail = parse("attachment.eml")
    assert mail.attachments == 2
    assert mail.text == "I attach photos of the car."
    assert "IMG_2041" not in repr(mail)
    assert mail.kind == PERSON


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("auto_submitted.eml", AUTO_REPLY),
        ("x_autoreply.eml", AUTO_REPLY),
        ("precedence.eml", AUTO_REPLY),
        ("list_bulk.eml", BULK),
        ("bounce_report.eml", BOUNCE),
        ("bounce_daemon.eml", BOUNCE),
    ],
)
def test_mailparse_recognises_automatic_mail(name: str, kind: str) -> None:
    mail = parse(name)
    assert mail.kind == kind
    assert not mail.answerable


def test_mailparse_oversize_keeps_headers_only() -> None:
    raw = (CORPUS / "oversize.eml").read_bytes()
    assert len(raw) > LIMIT
    mail = parse_mail(raw, LIMIT)
    assert mail.oversize
    assert mail.text == ""
    assert mail.size == len(raw)
    assert mail.sender == "long@mail.example.net"
    assert mail.subject == "Everything"
    assert parse_mail(raw, len(raw)).oversize is False


def test_mailparse_hostile_headers_and_body() -> None:
    mail = parse("hostile.eml")
    assert mail.sender == "eve@mail.example.net"
    for text in (mail.sender_name, mail.subject):
        assert "\r" not in text
        assert "\n" not in text
        assert "\u202e" not in text
    assert mail.subject.startswith("<img src=x onerror=alert(1)>")
    assert "alert('body')" not in mail.text
    assert "<b>escaped</b>" in mail.text
    assert "\u202e" not in mail.text
    assert "<iframe" not in mail.text


def test_mailparse_threading_headers() -> None:
    mail = parse("reply_gmail.eml")
    assert mail.references == (
        "k7q2m4v9x3c8n5b6z1w0p4r7t2.abc1@vso.example.org",
        "20261204201403.4711@mail.example.net",
    )
    assert mail.recipients == ("help+k7q2m4v9x3c8n5b6z1w0p4r7t2@vso.example.org",)


@pytest.mark.parametrize("name", ["malformed.eml", "no_sender.eml"])
def test_mailparse_without_sender_is_not_answerable(name: str) -> None:
    mail = parse(name)
    assert mail.sender is None
    assert not mail.answerable


def test_mailparse_every_corpus_file_is_safe_text() -> None:
    for path in sorted(CORPUS.glob("*.eml")):
        mail = parse_mail(path.read_bytes(), LIMIT)
        mail.text.encode("utf-8")
        mail.subject.encode("utf-8")
        assert "\r" not in mail.text, path.name
        assert "<script" not in mail.text.lower(), path.name


def test_fold_quotes_keeps_unquoted_text() -> None:
    assert fold_quotes("Just text.\n\nTwo lines.") == (
        "Just text.\n\nTwo lines.",
        False,
    )


def test_fold_quotes_only_quotes_leaves_nothing() -> None:
    assert fold_quotes("> old\n> older") == ("", True)


def test_html_to_text_entities_and_breaks() -> None:
    assert html_to_text("a<br>b&nbsp;&lt;c&gt;<p>d</p>") == "a\nb <c>\n\nd"


def test_clean_header_removes_line_breaks_and_bidi() -> None:
    assert clean_header("a\r\nBcc: b\u202ec\u2066d") == "a Bcc: bcd"


def _message_strategy() -> st.SearchStrategy[bytes]:
    """Build mail with random headers, charsets, encodings and bodies."""
    text = st.text(max_size=300)

    def build(
        subject: str, body: str, html: bool, charset: str, cte: str, name: str
    ) -> bytes:
        message = EmailMessage()
        message["Subject"] = " ".join(subject.split())[:100] or "x"
        message["From"] = "someone@mail.example.net"
        message["To"] = "help@vso.example.org"
        try:
            message.set_content(
                body, subtype="html" if html else "plain", charset=charset, cte=cte
            )
        except (UnicodeError, ValueError, LookupError):
            message.set_content("fallback")
        if name:
            message.add_attachment(
                name.encode("utf-8", "replace"),
                maintype="application",
                subtype="octet-stream",
                filename="file.bin",
            )
            # A fixed boundary keeps the email package's random one out.
            message.set_boundary("fuzz-boundary-0123456789")
        return bytes(message)

    return st.builds(
        build,
        text,
        text,
        st.booleans(),
        st.sampled_from(["utf-8", "iso-8859-1", "windows-1252", "us-ascii"]),
        st.sampled_from(["quoted-printable", "base64", "8bit"]),
        st.text(max_size=20),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_mailparse_never_raises_on_bytes(raw: bytes) -> None:
    mail = parse_mail(raw, 2000)
    mail.text.encode("utf-8")
    mail.subject.encode("utf-8")
    mail.sender_name.encode("utf-8")
    assert "\r" not in mail.subject


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_message_strategy())
def test_mailparse_never_raises_on_generated_mail(raw: bytes) -> None:
    mail = parse_mail(raw, LIMIT)
    mail.text.encode("utf-8")
    assert mail.sender == "someone@mail.example.net"
    assert "\r" not in mail.text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(
            [
                b"From: a@b.example\r\n",
                b"From: =?utf-8?q?=0D=0A?= <x@y.example>\r\n",
                b"Content-Type: multipart/mixed; boundary=b\r\n",
                b"Content-Type: text/html; charset=x-unknown\r\n",
                b"Content-Transfer-Encoding: base64\r\n",
                b"Subject: =?bogus?q?x?=\r\n",
                b"\r\n",
                b"--b\r\n",
                b"--b--\r\n",
                b"<p>t</p>\r\n",
                b"> quoted\r\n",
                b"\xff\xfe\x00\r\n",
            ]
        ),
        max_size=30,
    )
)
def test_mailparse_never_raises_on_mail_like_lines(lines: list[bytes]) -> None:
    mail = parse_mail(b"".join(lines), LIMIT)
    mail.text.encode("utf-8")
    mail.sender_name.encode("utf-8")
