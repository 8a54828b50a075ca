"""Turn raw e-mail into safe text for the dashboard.

``parse_mail`` never raises: whatever the bytes, it returns a ``ParsedMail``.
HTML is converted to text and never kept. Quoted history and signatures are
folded away, but quotes that an inline answer replies to stay, marked with
``>``. Attachments are counted and dropped. Header text loses control and
bidirectional formatting characters, so that it cannot break an outgoing header
or reorder what the dashboard shows.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser

logger = logging.getLogger("relay.mailparse")

# Kinds of mail: a person's message, or one that must never be answered.
PERSON = "person"
AUTO_REPLY = "auto_reply"
BOUNCE = "bounce"
BULK = "bulk"

# Maximum characters of body text kept; a longer text is cut, with a note.
MAX_TEXT_CHARS = 100_000
MAX_HEADER_CHARS = 500
MAX_REFERENCES = 50
TRUNCATED_NOTE = "\n[…]"

_BIDI_AND_CONTROLS = re.compile(
    "[\u0000-\u0008\u000b-\u001f\u007f-\u009f"
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)
_SURROGATES = re.compile("[\ud800-\udfff]")
_MESSAGE_ID = re.compile(r"<([^<>\s]{1,250})>")
# An ASCII dot-atom local part and a host name: what SMTP without the SMTPUTF8
# extension can deliver, and what the email package writes without defects.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")
_DAEMON_SENDERS = ("mailer-daemon", "postmaster")
_AUTOMATIC_PRECEDENCE = ("auto_reply", "bulk", "junk", "list")

# Quoted history: Outlook's separators and header block, the attribution
# line that precedes a quote ("On … wrote:", in some common languages).
_ORIGINAL_MESSAGE = re.compile(r"^\s*-{2,}\s*original message\s*-{2,}\s*$", re.I)
_UNDERSCORE_RULE = re.compile(r"^\s*_{10,}\s*$")
_HEADER_LINE = re.compile(r"^\s*\*?(from|sent|date|to|cc|subject)\*?:\s", re.I)
_ATTRIBUTION_END = re.compile(
    r"(wrote|schrieb|a écrit|escribió|ha scritto|kiteb|написал)\s*:\s*$", re.I
)
_MOBILE_SIGNATURE = re.compile(r"^\s*sent from my \w[\w ]{0,30}$", re.I)


@dataclass(frozen=True)
class ParsedMail:
    """The parts of one e-mail that the relay keeps.

    ``sender`` is the lower-cased address of From, or None when it has no
    usable one. ``references`` lists the Message-IDs of In-Reply-To and
    References, without angle brackets. ``recipients`` lists the lower-cased
    addresses of To, Cc, Delivered-To and X-Original-To.
    """

    kind: str
    sender: str | None
    sender_name: str
    subject: str
    message_id: str | None
    references: tuple[str, ...]
    recipients: tuple[str, ...]
    text: str
    quotes_folded: bool
    attachments: int
    oversize: bool
    size: int

    @property
    def answerable(self) -> bool:
        """Return True when the relay may send mail back to the sender."""
        return self.kind == PERSON and self.sender is not None


def clean_text(text: str) -> str:
    """Return ``text`` without control or bidirectional formatting characters.

    Line feeds and tabs stay; CR and CR LF become LF. Raw 8-bit bytes that the
    ``email`` package kept as surrogates are decoded as UTF-8, else as
    windows-1252, so the result always encodes as UTF-8.
    """
    if _SURROGATES.search(text):
        try:
            raw = text.encode("utf-8", "surrogateescape")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("windows-1252", errors="replace")
        except UnicodeEncodeError:
            text = _SURROGATES.sub("\ufffd", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _BIDI_AND_CONTROLS.sub("", text)


def clean_header(text: str) -> str:
    """Return header text on one line, cleaned and cut to ``MAX_HEADER_CHARS``."""
    one_line = " ".join(clean_text(text).split())
    return one_line[:MAX_HEADER_CHARS]


def parse_mail(raw: bytes, max_bytes: int, size: int | None = None) -> ParsedMail:
    """Parse one e-mail; mail over ``max_bytes`` keeps only its headers.

    ``size`` is the whole mail's size when ``raw`` holds only its headers, as
    fetched for mail over the limit.
    """
    size = len(raw) if size is None else max(size, len(raw))
    oversize = size > max_bytes
    try:
        if oversize:
            head = raw[: min(size, 256 * 1024)]
            message = email.message_from_bytes(
                head.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0],
                policy=email.policy.default,
            )
        else:
            message = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as error:  # the parser must never raise
        logger.warning("mail of %d bytes could not be parsed: %r", size, error)
        message = EmailMessage()
    sender_name, sender = _sender(message)
    text, folded, attachments = ("", False, 0)
    if not oversize:
        text, folded, attachments = _body(message)
    return ParsedMail(
        kind=_kind(message, sender),
        sender=sender,
        sender_name=sender_name,
        subject=clean_header(_header(message, "subject")),
        message_id=_first_id(_header(message, "message-id")),
        references=_references(message),
        recipients=_recipients(message),
        text=text,
        quotes_folded=folded,
        attachments=attachments,
        oversize=oversize,
        size=size,
    )


def _header(message: Message, name: str) -> str:
    """Return a header's decoded value, or "" when it is missing or broken."""
    try:
        value = message.get(name)
        return "" if value is None else str(value)
    except Exception:  # broken headers read as missing
        try:
            raw = message.get_all(name) or []
            return " ".join(str(item) for item in raw)
        except Exception:
            return ""


def _headers(message: Message, name: str) -> list[str]:
    try:
        return [str(value) for value in message.get_all(name) or []]
    except Exception:  # broken headers read as missing
        return []


def normalise_address(text: str) -> str | None:
    """Return ``text`` as a lower-cased address, or None when it is not one.

    NOTE: addresses with non-ASCII characters (SMTPUTF8) return None, so mail
    from them is recorded but not imported.
    """
    address = text.strip().lower()
    if len(address) > 254 or _ADDRESS.fullmatch(address) is None:
        return None
    if len(address.partition("@")[0]) > 64:
        return None
    return address


def _sender(message: Message) -> tuple[str, str | None]:
    """Return the display name and address of From.

    The structured header is read first, because a decoded display name may
    itself contain angle brackets; ``parseaddr`` reads what it cannot.
    """
    try:
        header = message.get("from")
        addresses = getattr(header, "addresses", ())
        if addresses:
            first = addresses[0]
            return clean_header(first.display_name), normalise_address(first.addr_spec)
    except Exception:  # broken headers fall back to parseaddr
        pass
    # Parse the still encoded value, so that a display name decoding to
    # "<x>" or CR LF cannot pass for the address.
    raw = next((str(v) for k, v in message.raw_items() if k.lower() == "from"), "")
    name, address = parseaddr(clean_header(raw))
    try:
        name = str(make_header(decode_header(name)))
    except Exception:  # an undecodable name stays encoded
        pass
    return clean_header(name), normalise_address(address)


def _first_id(text: str) -> str | None:
    match = _MESSAGE_ID.search(text)
    return match.group(1) if match else None


def _references(message: Message) -> tuple[str, ...]:
    ids: list[str] = []
    for name in ("in-reply-to", "references"):
        for value in _headers(message, name):
            for match in _MESSAGE_ID.finditer(value):
                if match.group(1) not in ids:
                    ids.append(match.group(1))
    return tuple(ids[-MAX_REFERENCES:])


def _recipients(message: Message) -> tuple[str, ...]:
    values: list[str] = []
    for name in ("to", "cc", "delivered-to", "x-original-to"):
        values.extend(clean_header(value) for value in _headers(message, name))
    found: list[str] = []
    for _, address in getaddresses(values):
        normalised = normalise_address(address)
        if normalised is not None and normalised not in found:
            found.append(normalised)
    return tuple(found[:MAX_REFERENCES])


def _kind(message: Message, sender: str | None) -> str:
    """Classify mail as a bounce, an auto-reply, list mail or a person's mail."""
    content_type = _header(message, "content-type").lower()
    local = (sender or "").partition("@")[0]
    return_path = _header(message, "return-path").strip()
    if (
        content_type.startswith("multipart/report")
        or local in _DAEMON_SENDERS
        or return_path == "<>"
    ):
        return BOUNCE
    auto_submitted = _header(message, "auto-submitted").strip().lower()
    if auto_submitted and auto_submitted != "no":
        return AUTO_REPLY
    for name in ("x-autoreply", "x-autorespond", "x-autogenerated"):
        if _header(message, name).strip():
            return AUTO_REPLY
    precedence = _header(message, "precedence").strip().lower()
    if precedence == "auto_reply":
        return AUTO_REPLY
    if precedence in _AUTOMATIC_PRECEDENCE or _header(message, "list-id").strip():
        return BULK
    return PERSON


def _body(message: Message) -> tuple[str, bool, int]:
    """Return the folded text, whether quotes were folded, and the attachments."""
    try:
        parts = _leaf_parts(message, inside_related=False, depth=0)
    except Exception as error:  # the parser must never raise
        logger.warning("mail structure could not be read: %r", error)
        return "", False, 0
    body_part = _choose_body(parts)
    attachments = sum(
        1
        for part, related in parts
        if part is not body_part and _is_attached(part, related)
    )
    if body_part is None:
        return "", False, attachments
    text = _decode(body_part)
    if body_part.get_content_subtype() == "html":
        text = html_to_text(text)
    text, folded = fold_quotes(clean_text(text))
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS] + TRUNCATED_NOTE
    return text, folded, attachments


def _leaf_parts(
    message: Message, inside_related: bool, depth: int
) -> list[tuple[Message, bool]]:
    """Return every non-multipart part, each with whether it sits in a related."""
    if depth > 20:
        return []
    if not message.is_multipart():
        return [(message, inside_related)]
    related = inside_related or message.get_content_subtype() == "related"
    parts: list[tuple[Message, bool]] = []
    payload = message.get_payload()
    if not isinstance(payload, list):
        return []
    for part in payload:
        if isinstance(part, Message):
            parts.extend(_leaf_parts(part, related, depth + 1))
    return parts


def _is_text_body(part: Message) -> bool:
    return (
        part.get_content_maintype() == "text"
        and part.get_content_subtype() in ("plain", "html")
        and part.get_content_disposition() != "attachment"
        and not part.get_filename()
    )


def _choose_body(parts: list[tuple[Message, bool]]) -> Message | None:
    """Return the first plain text part, else the first HTML part."""
    texts = [part for part, _ in parts if _is_text_body(part)]
    for part in texts:
        if part.get_content_subtype() == "plain":
            return part
    return texts[0] if texts else None


def _is_attached(part: Message, inside_related: bool) -> bool:
    """Return True for a part the sender attached, not an alternative or logo."""
    if _is_text_body(part):
        return False
    if inside_related and part.get_content_disposition() != "attachment":
        return False
    return True


def _decode(part: Message) -> str:
    """Return a text part's content, whatever its charset or transfer encoding."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # a damaged encoding reads as no content
        return ""
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    for candidate in (charset, "utf-8"):
        try:
            return payload.decode(_codec(candidate))
        except (LookupError, UnicodeDecodeError):
            continue
    # windows-1252 reads ISO-8859-1 text and the quotes and dashes of Windows.
    return payload.decode("windows-1252", errors="replace")


def _codec(charset: str) -> str:
    """Return the codec for a charset, reading ISO-8859-1 and ASCII as Windows do."""
    name = charset.strip().lower()
    if name in ("iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii"):
        # Senders label windows-1252 text as these; the extra characters only
        # occupy the C1 range, which ISO-8859-1 text does not use.
        return "windows-1252"
    return name


class _TextExtractor(HTMLParser):
    """Collect an HTML document's text, with blocks on lines of their own."""

    _SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
    _BLOCKS = frozenset(
        {
            "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt",
            "fieldset", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5",
            "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
            "table", "tr", "ul",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._line: list[str] = []
        self._skip_depth = 0
        self._quote_depth = 0

    def _break(self, blank: bool = True) -> None:
        """End the current line; ``blank`` also ends a paragraph."""
        text = " ".join("".join(self._line).split())
        if text:
            self.lines.append("> " * self._quote_depth + text)
        if blank and self.lines and self.lines[-1] != "":
            self.lines.append("")
        self._line = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag == "br":
            self._break(blank=False)
        elif tag in self._BLOCKS:
            self._break(blank=tag not in ("li", "tr", "dd", "dt"))
            if tag == "blockquote":
                self._quote_depth += 1
            elif tag == "li":
                self._line.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in self._BLOCKS:
            self._break(blank=tag not in ("li", "tr", "dd", "dt"))
            if tag == "blockquote":
                self._quote_depth = max(0, self._quote_depth - 1)

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self._line.append(data)


def html_to_text(html: str) -> str:
    """Return the text of an HTML document; scripts, styles and tags are dropped."""
    extractor = _TextExtractor()
    try:
        extractor.feed(html)
        extractor.close()
    except Exception:  # keep what was read before the damage
        pass
    extractor._break()
    return "\n".join(extractor.lines).strip()


def _is_quote(line: str) -> bool:
    return line.lstrip().startswith(">")


def _cut_history(lines: list[str]) -> tuple[list[str], bool]:
    """Cut the lines from a signature, an Outlook history or a "Sent from" line."""
    for index, line in enumerate(lines):
        if line in ("-- ", "--"):
            return lines[:index], True
        if _ORIGINAL_MESSAGE.match(line) or _MOBILE_SIGNATURE.match(line):
            return lines[:index], True
        if _UNDERSCORE_RULE.match(line) and any(
            _HEADER_LINE.match(following) for following in lines[index + 1 : index + 3]
        ):
            return lines[:index], True
        if _HEADER_LINE.match(line) and line.lstrip().lower().startswith(
            ("from:", "*from:*")
        ):
            block = lines[index + 1 : index + 5]
            if sum(1 for following in block if _HEADER_LINE.match(following)) >= 2:
                return lines[:index], True
    return lines, False


def _attribution_start(lines: list[str], quote_start: int) -> int:
    """Return where the attribution before the quote at ``quote_start`` begins.

    An attribution ends with "wrote:" (or its translation) and may be wrapped
    over up to three lines. Returns ``quote_start`` when there is none.
    """
    end = quote_start - 1
    while end >= 0 and not lines[end].strip():
        end -= 1
    if end < 0 or not _ATTRIBUTION_END.search(lines[end]):
        return quote_start
    start = end
    while start > 0 and end - start < 2 and lines[start - 1].strip():
        if lines[start].lstrip().lower().startswith(("on ", "am ", "le ", "el ")):
            break
        start -= 1
    return start


def fold_quotes(text: str) -> tuple[str, bool]:
    """Return ``text`` without its quoted history and signature, and whether any
    was removed.

    Quotes followed by an answer (an inline answer) are kept, each line starting
    with ``>``; the attribution line and the quotes after the last answer go.
    """
    lines, folded = _cut_history(text.split("\n"))
    # Blocks of quoted lines: (first line, line after the block).
    blocks: list[tuple[int, int]] = []
    index = 0
    while index < len(lines):
        if _is_quote(lines[index]):
            start = index
            while index < len(lines) and (
                _is_quote(lines[index])
                or (
                    not lines[index].strip()
                    and index + 1 < len(lines)
                    and _is_quote(lines[index + 1])
                )
            ):
                index += 1
            blocks.append((start, index))
        else:
            index += 1
    keep = [True] * len(lines)
    for position, (start, end) in enumerate(blocks):
        answered = any(line.strip() for line in lines[end:])
        first_block = position == 0
        if first_block:
            attribution = _attribution_start(lines, start)
            for line_index in range(attribution, start):
                keep[line_index] = False
            folded = folded or attribution < start
        if not answered:
            for line_index in range(start, end):
                keep[line_index] = False
            folded = True
    kept = [line.rstrip() for line, wanted in zip(lines, keep, strict=True) if wanted]
    result = "\n".join(kept)
    result = re.sub(r"\n{3,}", "\n\n", result).strip("\n")
    return result, folded


def log_summary(parsed: ParsedMail) -> str:
    """Return a one-line description of mail for logs: kind and sizes, no content."""
    return (
        f"kind={parsed.kind} bytes={parsed.size} chars={len(parsed.text)}"
        f" attachments={parsed.attachments} oversize={parsed.oversize}"
    )
