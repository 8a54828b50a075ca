"""Bounces of the service's mail as real mail servers write them.

Each builder takes the mail that bounced, as the SMTP server received it, and
returns the bounce as bytes. The forms are Postfix's RFC 3464 report with the
whole mail or with its headers only, and Gmail's and Exchange's notices that
quote the original headers in their text.
"""

from __future__ import annotations

from email import message_from_bytes, policy

REPORTING_MTA = "mx.vso.example.org"
DIAGNOSTIC = (
    "smtp; 550 5.1.1 <{recipient}>: Recipient address rejected:"
    " User unknown in virtual mailbox table"
)


def header_block(sent: bytes) -> str:
    """Return the header block of ``sent``, without the blank line after it."""
    text = sent.decode("utf-8", "replace").replace("\r\n", "\n")
    return text.split("\n\n", 1)[0]


def message_id_of(sent: bytes) -> str:
    """Return the Message-ID header of ``sent``, with angle brackets."""
    return str(message_from_bytes(sent, policy=policy.default)["Message-ID"])


def postfix_report(
    sent: bytes,
    recipient: str,
    *,
    status: str = "5.1.1",
    action: str = "failed",
    diagnostic: str = DIAGNOSTIC,
    headers_only: bool = False,
    bounce_id: str = "20261205090005.4F2A11C0A3@mx.vso.example.org",
) -> bytes:
    """Return Postfix's delivery status notification for ``sent``.

    It returns the whole mail as message/rfc822, or with ``headers_only`` its
    header block as text/rfc822-headers. ``diagnostic`` may contain
    ``{recipient}``.
    """
    boundary = "4F2A11C0A3.1796461205/mx.vso.example.org"
    diagnostic_text = diagnostic.format(recipient=recipient)
    if headers_only:
        returned = (
            "Content-Description: Undelivered Message Headers\n"
            "Content-Type: text/rfc822-headers\n\n"
            f"{header_block(sent)}\n"
        )
    else:
        body = sent.decode("utf-8", "replace").replace("\r\n", "\n")
        returned = (
            "Content-Description: Undelivered Message\n"
            "Content-Type: message/rfc822\n"
            "Content-Transfer-Encoding: 8bit\n\n"
            f"{body}"
        )
    text = f"""\
Return-Path: <>
Delivered-To: help@vso.example.org
Received: by {REPORTING_MTA} (Postfix)
\tid 4F2A11C0A3; Sat,  5 Dec 2026 10:00:05 +0100 (CET)
Date: Sat,  5 Dec 2026 10:00:05 +0100 (CET)
From: MAILER-DAEMON@{REPORTING_MTA} (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: help@vso.example.org
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Content-Transfer-Encoding: 8bit
Message-Id: <{bounce_id}>

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host {REPORTING_MTA}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

                   The mail system

<{recipient}>: host mail.example.net[192.0.2.25] said:
    {diagnostic_text.removeprefix("smtp; ")} (in reply to RCPT TO command)

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; {REPORTING_MTA}
X-Postfix-Queue-ID: 4F2A11C0A3
X-Postfix-Sender: rfc822; help@vso.example.org
Arrival-Date: Sat,  5 Dec 2026 10:00:04 +0100 (CET)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mail.example.net
Diagnostic-Code: {diagnostic_text}

--{boundary}
{returned}
--{boundary}--
"""
    return text.encode("utf-8")


def gmail_notice(sent: bytes, recipient: str) -> bytes:
    """Return Gmail's notice for ``sent``: text and HTML that quote its headers,
    with no delivery status part and no returned mail."""
    headers = header_block(sent)
    boundary = "000000000000b1a0e5062c3f9d41"
    text = f"""\
Return-Path: <>
Received: by 2002:a05:6a20:1234:b0:1f3:0:0 with SMTP id x1csp1234pzb;
        Sat, 05 Dec 2026 01:00:06 -0800 (PST)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: help@vso.example.org
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
Message-ID: <6751a3c6.a70a0220.2f1c3.9b1dSMTPIN_ADDED_BROKEN@mx.google.com>
Date: Sat, 05 Dec 2026 01:00:06 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset="UTF-8"

** Address not found **

Your message wasn't delivered to {recipient} because the address couldn't be
found, or is unable to receive mail.

Learn more here: https://support.google.com/mail/?p=NoSuchUser

The response was:

550 5.1.1 The email account that you tried to reach does not exist. Please try
double-checking the recipient's email address for typos or unnecessary spaces.
For more information, go to https://support.google.com/mail/?p=NoSuchUser
a640c23a62f3a-aa6-v1si1234567ejc.201 - gsmtp

----- Original message -----

{headers}

--{boundary}
Content-Type: text/html; charset="UTF-8"

<html><body><p><b>Address not found</b></p>
<p>Your message wasn't delivered to <a>{recipient}</a> because the address
couldn't be found, or is unable to receive mail.</p>
<p>The response was:</p>
<p>550 5.1.1 The email account that you tried to reach does not exist.</p>
<pre>{headers.replace("<", "&lt;").replace(">", "&gt;")}</pre>
</body></html>

--{boundary}--
"""
    return text.encode("utf-8")


def exchange_notice(sent: bytes, recipient: str) -> bytes:
    """Return an Exchange non-delivery report for ``sent`` in plain text, with
    its headers under "Original message headers"."""
    return f"""\
Return-Path: <>
From: Microsoft Outlook <postmaster@contoso.example>
To: help@vso.example.org
Date: Sat, 5 Dec 2026 09:00:07 +0000
Subject: Undeliverable: Re: Need to talk to someone
Message-ID: <1f9a3c2e-4b7d-4e21-9a0f-5c6d7e8f9a0b@contoso.example>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: text/plain; charset="us-ascii"

Delivery has failed to these recipients or groups:

{recipient}
The email address you entered couldn't be found. Please check the
recipient's email address and try to resend the message.

Diagnostic information for administrators:

Generating server: AM0PR01MB1234.eurprd01.prod.exchangelabs.com

{recipient}
Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound;
Recipient not found by SMTP address lookup'

Original message headers:

{header_block(sent)}
""".encode()
