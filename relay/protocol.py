"""Wire frames: parsing, checks and limits, free of I/O.

Every frame is a JSON object with a string ``type``; ``docs/protocol.md`` lists
them. Parsing raises ``ProtocolError`` carrying the error code the client receives.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE_CHARS = 4000
MAX_FRAME_BYTES = 64 * 1024
# A JSON encoder that escapes non-ASCII writes one code point in up to 12 bytes
# ("\ud83d\ude00"), so a frame must hold 12 bytes a character plus the fields.
JSON_BYTES_PER_CHAR = 12
FRAME_OVERHEAD_BYTES = 1024
CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
CONVERSATION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")
RESOURCE_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
LANGUAGE_PATTERN = re.compile(r"[a-z]{2}")

# WebSocket close codes (RFC 6455 and the IANA registry), plus one of our own.
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_SIGNED_OUT = 4001


class ProtocolError(ValueError):
    """A frame the relay rejects; ``code`` is sent to the client."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        client_id: str | None = None,
        conversation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id
        self.conversation = conversation
        # Where to get help instead, as {name, number} entries, for refusals.
        self.help: list[dict[str, str]] | None = None

    def to_frame(self) -> dict[str, Any]:
        """Return the ``error`` frame that reports this error."""
        frame: dict[str, Any] = {
            "type": "error",
            "code": self.code,
            "message": self.message,
        }
        if self.client_id is not None:
            frame["client_id"] = self.client_id
        if self.conversation is not None:
            frame["conversation"] = self.conversation
        if self.help is not None:
            frame["help"] = self.help
        return frame


@dataclass(frozen=True)
class ConversationFrame:
    """A frame whose only field is the conversation it acts on."""

    conversation: str


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Resume:
    token: str
    last_seq: int


@dataclass(frozen=True)
class Send:
    client_id: str
    body: str
    conversation: str | None = None


@dataclass(frozen=True)
class End:
    conversation: str | None = None


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Delete:
    token: str


class Block(ConversationFrame):
    pass


@dataclass(frozen=True)
class Hello:
    last_seq: dict[str, int]


@dataclass(frozen=True)
class Availability:
    available: bool


class Accept(ConversationFrame):
    pass


@dataclass(frozen=True)
class ShareResource:
    """A volunteer's request to send a directory entry or hub page as a card."""

    conversation: str
    client_id: str
    resource: str
    language: str


class NeedSupport(ConversationFrame):
    pass


class HardChat(ConversationFrame):
    pass


@dataclass(frozen=True)
class EndBreak:
    pass


# Frames only supervisors and admins may send.


@dataclass(frozen=True)
class Supervise:
    pass


class Watch(ConversationFrame):
    pass


class Unwatch(ConversationFrame):
    pass


@dataclass(frozen=True)
class WhisperNote:
    conversation: str
    body: str


class Join(ConversationFrame):
    pass


class Leave(ConversationFrame):
    pass


@dataclass(frozen=True)
class SupervisorSend:
    send: Send


@dataclass(frozen=True)
class Transfer:
    conversation: str
    volunteer: int


@dataclass(frozen=True)
class Acknowledge:
    alert: int


SUPERVISOR_FRAMES = (
    Supervise,
    Watch,
    Unwatch,
    WhisperNote,
    Join,
    Leave,
    SupervisorSend,
    Transfer,
    Acknowledge,
)
VisitorFrame = Start | Resume | Send | End | Ping | Delete
VolunteerFrame = (
    Hello
    | Availability
    | Accept
    | Send
    | End
    | Ping
    | Block
    | NeedSupport
    | HardChat
    | EndBreak
    | Supervise
    | Watch
    | Unwatch
    | WhisperNote
    | Join
    | Leave
    | SupervisorSend
    | Transfer
    | Acknowledge
    | ShareResource
)


def _invalid(message: str) -> ProtocolError:
    return ProtocolError("invalid_frame", message)


def decode(text: str) -> dict[str, Any]:
    """Decode one text frame into a JSON object with a string ``type``."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and integers over Python's digit limit.
        raise _invalid("The frame is not valid JSON.") from None
    if not isinstance(data, dict):
        raise _invalid("The frame must be a JSON object.")
    frame_type = data.get("type")
    if not isinstance(frame_type, str):
        raise _invalid("The frame has no string field 'type'.")
    return data


# One encoder for every frame: ``json.dumps`` with options builds a new one
# each call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(frame: dict[str, Any]) -> str:
    """Encode a frame compactly; non-ASCII text stays as UTF-8."""
    return _ENCODER.encode(frame)


def _string(data: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _invalid(f"Field '{name}' is missing or not a valid identifier.")
    return value


# Sequence numbers fit SQLite's 64-bit integers.
MAX_SEQ = 2**63 - 1


def _non_negative_int(data: dict[str, Any], name: str) -> int:
    value = data.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(f"Field '{name}' must be a whole number of 0 or more.")
    if value > MAX_SEQ:
        raise _invalid(f"Field '{name}' is larger than {MAX_SEQ}.")
    return value


# Letters that render as blank space although Unicode does not class them as space
# or format characters: Hangul fillers and the blank Braille pattern.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Unicode categories that show nothing on their own: space and line separators,
# control characters and format characters (zero-width space, joiners, marks of
# direction, the byte order mark, variation selectors' neighbours and tags).
INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


def is_blank(text: str) -> bool:
    """Return True when ``text`` would show nothing: only white space, zero-width
    or other invisible characters."""
    return all(
        char in BLANK_LETTERS
        or unicodedata.category(char) in INVISIBLE_CATEGORIES
        or "\ufe00" <= char <= "\ufe0f"
        for char in text
    )


def clean_body(body: object, *, max_chars: int = MAX_MESSAGE_CHARS) -> str:
    """Return the message body trimmed of outer white space.

    Raises ``ProtocolError`` with ``empty_message`` or ``message_too_long``; the
    limit counts Unicode code points, as browsers' ``maxlength`` roughly does. A
    body of only white space, zero-width or other invisible characters counts as
    empty; otherwise such characters are kept as sent (joiners belong in emoji
    and in some scripts).
    """
    if not isinstance(body, str):
        raise _invalid("Field 'body' must be a string.")
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:
        # JSON allows lone surrogates such as "\ud800"; UTF-8 cannot store them.
        raise _invalid("Field 'body' contains an unpaired surrogate.") from None
    text = body.strip()
    if not text or is_blank(text):
        raise ProtocolError("empty_message", "The message is empty.")
    if len(text) > max_chars:
        raise ProtocolError(
            "message_too_long",
            f"The message has {len(text)} characters; the limit is {max_chars}.",
        )
    return text


def _send(data: dict[str, Any], max_chars: int, with_conversation: bool) -> Send:
    client_id = _string(data, "client_id", CLIENT_ID_PATTERN)
    conversation = (
        _string(data, "conversation", CONVERSATION_ID_PATTERN)
        if with_conversation
        else None
    )
    try:
        body = clean_body(data.get("body"), max_chars=max_chars)
    except ProtocolError as error:
        error.client_id = client_id
        error.conversation = conversation
        raise
    return Send(client_id=client_id, body=body, conversation=conversation)


def parse_visitor_frame(
    text: str, *, max_chars: int = MAX_MESSAGE_CHARS
) -> VisitorFrame:
    """Parse a frame sent by a visitor's chat page."""
    data = decode(text)
    match data["type"]:
        case "start":
            return Start()
        case "resume":
            return Resume(
                token=_string(data, "token", TOKEN_PATTERN),
                last_seq=_non_negative_int(data, "last_seq"),
            )
        case "send":
            return _send(data, max_chars, with_conversation=False)
        case "end":
            return End()
        case "ping":
            return Ping()
        case "delete":
            return Delete(token=_string(data, "token", TOKEN_PATTERN))
    raise _invalid(f"Unknown frame type {data['type'][:40]!r}.")


def parse_volunteer_frame(
    text: str, *, max_chars: int = MAX_MESSAGE_CHARS
) -> VolunteerFrame:
    """Parse a frame sent by a volunteer's dashboard."""
    data = decode(text)
    match data["type"]:
        case "hello":
            raw = data.get("last_seq", {})
            if not isinstance(raw, dict) or len(raw) > 100:
                raise _invalid(
                    "Field 'last_seq' must be an object of at most 100 entries."
                )
            last_seq: dict[str, int] = {}
            for key in raw:
                if not isinstance(key, str) or not CONVERSATION_ID_PATTERN.fullmatch(
                    key
                ):
                    raise _invalid("Field 'last_seq' has an invalid conversation id.")
                last_seq[key] = _non_negative_int(raw, key)
            return Hello(last_seq=last_seq)
        case "availability":
            available = data.get("available")
            if not isinstance(available, bool):
                raise _invalid("Field 'available' must be true or false.")
            return Availability(available=available)
        case "send":
            return _send(data, max_chars, with_conversation=True)
        case "end":
            return End(conversation=_conversation(data))
        case "resource":
            return ShareResource(
                conversation=_conversation(data),
                client_id=_string(data, "client_id", CLIENT_ID_PATTERN),
                resource=_string(data, "resource", RESOURCE_ID_PATTERN),
                language=_string(data, "language", LANGUAGE_PATTERN),
            )
        case "ping":
            return Ping()
    return _parse_staff_frame(data, max_chars)


def _positive_int(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 < value <= MAX_SEQ
    ):
        raise _invalid(f"Field '{name}' must be a whole number of 1 or more.")
    return value


def _conversation(data: dict[str, Any]) -> str:
    return _string(data, "conversation", CONVERSATION_ID_PATTERN)


# The dashboard frames that carry nothing but a conversation id.
_CONVERSATION_FRAMES: dict[str, Callable[[str], VolunteerFrame]] = {
    "accept": Accept,
    "block": Block,
    "need_support": NeedSupport,
    "hard_chat": HardChat,
    "watch": Watch,
    "unwatch": Unwatch,
    "join": Join,
    "leave": Leave,
}


def _parse_staff_frame(data: dict[str, Any], max_chars: int) -> VolunteerFrame:
    """Parse a dashboard's frames that act on one conversation, and its wellbeing
    and supervision frames."""
    frame_class = _CONVERSATION_FRAMES.get(data["type"])
    if frame_class is not None:
        return frame_class(_conversation(data))
    match data["type"]:
        case "end_break":
            return EndBreak()
        case "supervise":
            return Supervise()
        case "whisper":
            target = _conversation(data)
            try:
                body = clean_body(data.get("body"), max_chars=max_chars)
            except ProtocolError as error:
                error.conversation = target
                raise
            return WhisperNote(conversation=target, body=body)
        case "supervisor_send":
            return SupervisorSend(send=_send(data, max_chars, with_conversation=True))
        case "transfer":
            return Transfer(
                conversation=_conversation(data),
                volunteer=_positive_int(data, "volunteer"),
            )
        case "acknowledge":
            return Acknowledge(alert=_positive_int(data, "alert"))
    raise _invalid(f"Unknown frame type {data['type'][:40]!r}.")
