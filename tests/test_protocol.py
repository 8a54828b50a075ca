"""Unit and property tests of ``relay.protocol``: parsing, limits and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.protocol import (
    MAX_MESSAGE_CHARS,
    Accept,
    Availability,
    Block,
    Delete,
    End,
    Hello,
    Ping,
    ProtocolError,
    Resume,
    Send,
    Start,
    clean_body,
    encode,
    parse_visitor_frame,
    parse_volunteer_frame,
)

TOKEN = "t" * 16
PARSERS = [
    pytest.param(parse_visitor_frame, id="visitor"),
    pytest.param(parse_volunteer_frame, id="volunteer"),
]


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def visitor_send(body: object, client_id: str = "m-1") -> str:
    return frame(type="send", client_id=client_id, body=body)


def volunteer_send(body: object, client_id: str = "m-1") -> str:
    return frame(type="send", conversation="c1", client_id=client_id, body=body)


def assert_invalid_frame(parse: Any, text: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse(text)
    assert raised.value.code == "invalid_frame"


# Every frame type


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (frame(type="start"), Start()),
        (frame(type="resume", token=TOKEN, last_seq=3), Resume(TOKEN, 3)),
        (frame(type="resume", token=TOKEN), Resume(TOKEN, 0)),
        (frame(type="send", client_id="m-1", body=" hi "), Send("m-1", "hi")),
        (frame(type="end"), End()),
        (frame(type="ping"), Ping()),
    ],
    ids=["start", "resume", "resume-no-last-seq", "send", "end", "ping"],
)
def test_parse_visitor_frame_each_type(text: str, expected: object) -> None:
    assert parse_visitor_frame(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (frame(type="hello", last_seq={"c1": 2, "c2": 0}), Hello({"c1": 2, "c2": 0})),
        (frame(type="hello"), Hello({})),
        (frame(type="availability", available=True), Availability(True)),
        (frame(type="availability", available=False), Availability(False)),
        (frame(type="accept", conversation="c1"), Accept("c1")),
        (volunteer_send(" hi "), Send("m-1", "hi", conversation="c1")),
        (frame(type="end", conversation="c1"), End("c1")),
        (frame(type="ping"), Ping()),
    ],
    ids=[
        "hello",
        "hello-no-last-seq",
        "availability-on",
        "availability-off",
        "accept",
        "send",
        "end",
        "ping",
    ],
)
def test_parse_volunteer_frame_each_type(text: str, expected: object) -> None:
    assert parse_volunteer_frame(text) == expected


def test_parse_visitor_frame_ignores_extra_fields() -> None:
    assert parse_visitor_frame(frame(type="ping", extra=[1, 2])) == Ping()


def test_parse_visitor_frame_volunteer_type_rejected() -> None:
    assert_invalid_frame(parse_visitor_frame, frame(type="accept", conversation="c1"))


def test_parse_volunteer_frame_visitor_type_rejected() -> None:
    assert_invalid_frame(parse_volunteer_frame, frame(type="start"))


# Malformed frames


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "not json",
        "{'type': 'ping'}",
        "[1, 2]",
        '"ping"',
        "null",
        "42",
        "{}",
        '{"type": null}',
        '{"type": 1}',
        '{"type": ["ping"]}',
        '{"type": "PING"}',
        '{"type": "unknown"}',
        '{"type": ""}',
        "[" * 100_000,
    ],
    ids=[
        "empty",
        "unclosed",
        "not-json",
        "single-quotes",
        "array",
        "string",
        "null",
        "number",
        "no-type",
        "type-null",
        "type-int",
        "type-list",
        "type-uppercase",
        "type-unknown",
        "type-empty",
        "deep-nesting",
    ],
)
def test_parse_malformed_frame_invalid(parse: Any, text: str) -> None:
    assert_invalid_frame(parse, text)


@pytest.mark.parametrize("parse", PARSERS)
def test_parse_huge_integer_invalid(parse: Any) -> None:
    # Python 3.11 limits int() to 4300 digits by default, so json.loads raises a
    # plain ValueError here. The frame is still well under the 64 KiB limit.
    text = '{"type": "ping", "n": 1' + "0" * 5000 + "}"

    assert_invalid_frame(parse, text)


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "resume"},
        {"type": "resume", "token": 1234567890123456},
        {"type": "resume", "token": "t" * 15},
        {"type": "resume", "token": "t" * 129},
        {"type": "resume", "token": "t" * 15 + "!"},
        {"type": "resume", "token": TOKEN, "last_seq": "3"},
        {"type": "resume", "token": TOKEN, "last_seq": 3.0},
        {"type": "resume", "token": TOKEN, "last_seq": None},
        {"type": "resume", "token": TOKEN, "last_seq": True},
        {"type": "resume", "token": TOKEN, "last_seq": False},
        {"type": "resume", "token": TOKEN, "last_seq": -1},
        {"type": "send", "body": "hi"},
        {"type": "send", "client_id": 5, "body": "hi"},
        {"type": "send", "client_id": "m-1"},
        {"type": "send", "client_id": "m-1", "body": 5},
        {"type": "send", "client_id": "m-1", "body": ["hi"]},
        {"type": "send", "client_id": "m-1", "body": None},
    ],
    ids=[
        "resume-no-token",
        "resume-token-int",
        "resume-token-short",
        "resume-token-long",
        "resume-token-bad-char",
        "last-seq-string",
        "last-seq-float",
        "last-seq-null",
        "last-seq-true",
        "last-seq-false",
        "last-seq-negative",
        "send-no-client-id",
        "send-client-id-int",
        "send-no-body",
        "send-body-int",
        "send-body-list",
        "send-body-null",
    ],
)
def test_parse_visitor_frame_wrong_field_invalid(fields: dict[str, Any]) -> None:
    assert_invalid_frame(parse_visitor_frame, json.dumps(fields))


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "hello", "last_seq": [1]},
        {"type": "hello", "last_seq": 3},
        {"type": "hello", "last_seq": {"c1": "2"}},
        {"type": "hello", "last_seq": {"c1": True}},
        {"type": "hello", "last_seq": {"c1": -1}},
        {"type": "hello", "last_seq": {"c1": 1.5}},
        {"type": "hello", "last_seq": {"bad id": 1}},
        {"type": "hello", "last_seq": {"": 1}},
        {"type": "hello", "last_seq": {f"c{i}": 0 for i in range(101)}},
        {"type": "availability"},
        {"type": "availability", "available": "true"},
        {"type": "availability", "available": 1},
        {"type": "availability", "available": None},
        {"type": "accept"},
        {"type": "accept", "conversation": 1},
        {"type": "accept", "conversation": "c 1"},
        {"type": "accept", "conversation": "c" * 65},
        {"type": "end"},
        {"type": "end", "conversation": ""},
        {"type": "send", "client_id": "m-1", "body": "hi"},
        {"type": "send", "conversation": "c1", "body": "hi"},
        {"type": "send", "conversation": "c1", "client_id": "m-1", "body": 5},
    ],
    ids=[
        "hello-last-seq-list",
        "hello-last-seq-int",
        "hello-value-string",
        "hello-value-bool",
        "hello-value-negative",
        "hello-value-float",
        "hello-key-space",
        "hello-key-empty",
        "hello-101-entries",
        "availability-missing",
        "availability-string",
        "availability-int",
        "availability-null",
        "accept-missing",
        "accept-int",
        "accept-space",
        "accept-too-long",
        "end-missing",
        "end-empty",
        "send-no-conversation",
        "send-no-client-id",
        "send-body-int",
    ],
)
def test_parse_volunteer_frame_wrong_field_invalid(fields: dict[str, Any]) -> None:
    assert_invalid_frame(parse_volunteer_frame, json.dumps(fields))


def test_parse_volunteer_frame_hello_100_entries() -> None:
    last_seq = {f"c{i}": i for i in range(100)}

    parsed = parse_volunteer_frame(frame(type="hello", last_seq=last_seq))

    assert parsed == Hello(last_seq)


def test_parse_visitor_frame_last_seq_large_int() -> None:
    parsed = parse_visitor_frame(frame(type="resume", token=TOKEN, last_seq=2**40))

    assert parsed == Resume(TOKEN, 2**40)


def test_parse_visitor_frame_token_128_chars() -> None:
    token = "A-_z" * 32

    assert parse_visitor_frame(frame(type="resume", token=token)) == Resume(token, 0)


# client_id


@pytest.mark.parametrize("client_id", ["a", "A-z_09", "x" * 64])
def test_parse_visitor_frame_client_id_valid(client_id: str) -> None:
    parsed = parse_visitor_frame(visitor_send("hi", client_id))

    assert parsed == Send(client_id, "hi")


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(
    "client_id",
    ["", "x" * 65, "a b", "a/b", "a.b", "é", "abc\n", " abc"],
    ids=[
        "empty",
        "too-long",
        "space",
        "slash",
        "dot",
        "non-ascii",
        "trailing-newline",
        "leading-space",
    ],
)
def test_parse_send_bad_client_id_invalid(parse: Any, client_id: str) -> None:
    text = json.dumps(
        {"type": "send", "conversation": "c1", "client_id": client_id, "body": "hi"}
    )

    assert_invalid_frame(parse, text)


# Message bodies


@pytest.mark.parametrize(
    "body",
    ["", " ", "  \n\t ", "\u3000"],
    ids=["empty", "space", "mixed", "ideographic"],
)
def test_parse_visitor_frame_empty_body(body: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_visitor_frame(visitor_send(body))

    assert raised.value.code == "empty_message"
    assert raised.value.client_id == "m-1"


def test_parse_visitor_frame_body_at_limit() -> None:
    body = "a" * MAX_MESSAGE_CHARS

    parsed = parse_visitor_frame(visitor_send(body))

    assert parsed == Send("m-1", body)


def test_parse_visitor_frame_body_over_limit() -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_visitor_frame(visitor_send("a" * (MAX_MESSAGE_CHARS + 1)))

    assert raised.value.code == "message_too_long"
    assert raised.value.client_id == "m-1"
    assert raised.value.conversation is None


def test_parse_volunteer_frame_body_over_limit() -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_volunteer_frame(volunteer_send("a" * (MAX_MESSAGE_CHARS + 1)))

    assert raised.value.code == "message_too_long"
    assert raised.value.client_id == "m-1"
    assert raised.value.conversation == "c1"


def test_parse_visitor_frame_limit_after_trimming() -> None:
    body = "a" * MAX_MESSAGE_CHARS

    parsed = parse_visitor_frame(visitor_send(f"  \n{body}\n  "))

    assert parsed == Send("m-1", body)


@pytest.mark.parametrize(
    "unit", ["é", "😀", "e\u0301"], ids=["two-bytes", "four-bytes", "combining"]
)
def test_parse_visitor_frame_counts_code_points(unit: str) -> None:
    at_limit = (unit * MAX_MESSAGE_CHARS)[:MAX_MESSAGE_CHARS]

    parsed = parse_visitor_frame(visitor_send(at_limit))

    assert parsed == Send("m-1", at_limit)


@pytest.mark.parametrize(
    "unit", ["é", "😀", "e\u0301"], ids=["two-bytes", "four-bytes", "combining"]
)
def test_parse_visitor_frame_code_points_over_limit(unit: str) -> None:
    over_limit = (unit * (MAX_MESSAGE_CHARS + 1))[: MAX_MESSAGE_CHARS + 1]

    with pytest.raises(ProtocolError) as raised:
        parse_visitor_frame(visitor_send(over_limit))

    assert raised.value.code == "message_too_long"


def test_parse_visitor_frame_non_ascii_escaped_json() -> None:
    text = '{"type": "send", "client_id": "m-1", "body": "\\u00e9\\ud83d\\ude00"}'

    assert parse_visitor_frame(text) == Send("m-1", "é😀")


@pytest.mark.parametrize("parse", PARSERS)
def test_parse_send_max_chars_honoured(parse: Any) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse(volunteer_send("a" * 11), max_chars=10)

    assert raised.value.code == "message_too_long"


@pytest.mark.parametrize("parse", PARSERS)
def test_parse_send_max_chars_at_limit(parse: Any) -> None:
    parsed = parse(volunteer_send("a" * 10), max_chars=10)

    assert isinstance(parsed, Send)
    assert parsed.body == "a" * 10


def test_clean_body_trims() -> None:
    assert clean_body("\n  hello there \t") == "hello there"


def test_clean_body_keeps_inner_whitespace() -> None:
    assert clean_body(" a \n\n b ") == "a \n\n b"


def test_clean_body_max_chars() -> None:
    with pytest.raises(ProtocolError) as raised:
        clean_body("abc", max_chars=2)

    assert raised.value.code == "message_too_long"


def test_clean_body_not_string() -> None:
    with pytest.raises(ProtocolError) as raised:
        clean_body(b"hello")

    assert raised.value.code == "invalid_frame"


# ProtocolError and encode


def test_protocol_error_to_frame_minimal() -> None:
    error = ProtocolError("not_found", "No such conversation.")

    assert error.to_frame() == {
        "type": "error",
        "code": "not_found",
        "message": "No such conversation.",
    }


def test_protocol_error_to_frame_with_ids() -> None:
    error = ProtocolError(
        "message_too_long", "Too long.", client_id="m-1", conversation="c1"
    )

    assert error.to_frame() == {
        "type": "error",
        "code": "message_too_long",
        "message": "Too long.",
        "client_id": "m-1",
        "conversation": "c1",
    }


def test_protocol_error_is_value_error() -> None:
    error = ProtocolError("invalid_frame", "Bad.")

    assert isinstance(error, ValueError)
    assert str(error) == "Bad."


def test_encode_keeps_non_ascii() -> None:
    encoded = encode({"type": "message", "body": "héllo 😀 مرحبا"})

    assert encoded == '{"type":"message","body":"héllo 😀 مرحبا"}'


def test_encode_round_trips() -> None:
    value = {"type": "ack", "client_id": "m-1", "seq": 3, "nested": [None, True]}

    assert json.loads(encode(value)) == value


# Properties

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=20,
)
FRAME_TYPES = [
    "delete",
    "block",
    "start",
    "resume",
    "send",
    "end",
    "ping",
    "hello",
    "availability",
    "accept",
]
FIELD_NAMES = [
    "token",
    "last_seq",
    "client_id",
    "body",
    "conversation",
    "available",
]
FIELD_VALUES = (
    JSON_VALUES
    | st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
    | st.integers(min_value=-2, max_value=5)
    | st.dictionaries(
        st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True),
        st.integers(min_value=-1, max_value=5) | st.booleans(),
        max_size=3,
    )
)
FRAME_LIKE = st.builds(
    lambda frame_type, fields: {**fields, "type": frame_type},
    st.sampled_from(FRAME_TYPES),
    st.dictionaries(st.sampled_from(FIELD_NAMES), FIELD_VALUES, max_size=4),
)
VISITOR_FRAMES = (Start, Resume, Send, End, Ping, Delete)
VOLUNTEER_FRAMES = (Hello, Availability, Accept, Send, End, Ping, Block)


def assert_frame_or_protocol_error(text: str) -> None:
    try:
        parsed = parse_visitor_frame(text)
    except ProtocolError:
        pass
    else:
        assert isinstance(parsed, VISITOR_FRAMES)
    try:
        parsed = parse_volunteer_frame(text)
    except ProtocolError:
        pass
    else:
        assert isinstance(parsed, VOLUNTEER_FRAMES)


@settings(max_examples=300)
@given(st.text())
def test_parse_arbitrary_text_frame_or_error(text: str) -> None:
    assert_frame_or_protocol_error(text)


@settings(max_examples=300)
@given(JSON_VALUES)
def test_parse_arbitrary_json_frame_or_error(value: object) -> None:
    assert_frame_or_protocol_error(json.dumps(value))


@settings(max_examples=300)
@given(FRAME_LIKE)
def test_parse_frame_like_json_frame_or_error(value: dict[str, object]) -> None:
    assert_frame_or_protocol_error(json.dumps(value))


@pytest.mark.parametrize("parse", PARSERS)
def test_parse_lone_surrogate_body_invalid(parse: Any) -> None:
    text = '{"type": "send", "client_id": "a", "conversation": "c", "body": "x\\ud800"}'

    assert_invalid_frame(parse, text)


def test_parse_resume_seq_over_64_bits_invalid() -> None:
    text = (
        '{"type": "resume", "token": "'
        + "t" * 32
        + '", "last_seq": '
        + str(2**64)
        + "}"
    )

    assert_invalid_frame(parse_visitor_frame, text)


def test_parse_visitor_delete() -> None:
    frame = parse_visitor_frame(json.dumps({"type": "delete", "token": TOKEN}))

    assert frame == Delete(token=TOKEN)


def test_parse_visitor_delete_without_token_invalid() -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_visitor_frame(json.dumps({"type": "delete"}))

    assert raised.value.code == "invalid_frame"


def test_parse_volunteer_block() -> None:
    frame = parse_volunteer_frame(json.dumps({"type": "block", "conversation": "c1"}))

    assert frame == Block(conversation="c1")


def test_parse_volunteer_block_bad_conversation_invalid() -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_volunteer_frame(json.dumps({"type": "block", "conversation": "a b"}))

    assert raised.value.code == "invalid_frame"


def test_block_not_a_visitor_frame() -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_visitor_frame(json.dumps({"type": "block", "conversation": "c1"}))

    assert raised.value.code == "invalid_frame"


def test_error_frame_carries_help() -> None:
    error = ProtocolError("rate_limited", "Slow down.")
    error.help = [{"name": "Emergency", "number": "112"}]

    assert error.to_frame()["help"] == [{"name": "Emergency", "number": "112"}]


@pytest.mark.parametrize(
    "body",
    [
        "\u200b",
        "\u200b\u200c\u200d",
        " \u2060 \ufeff ",
        "\u200e\u200f\u202a\u202c",
        "\u00ad",
        "\u3164\u115f\u2800",
        "\ufe0f",
        "\u200b\n\u200b",
    ],
    ids=[
        "zero-width-space",
        "joiners",
        "word-joiner-bom",
        "direction-marks",
        "soft-hyphen",
        "fillers",
        "variation-selector",
        "zero-width-lines",
    ],
)
def test_clean_body_rejects_invisible_only(body: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        clean_body(body)

    assert raised.value.code == "empty_message"


@pytest.mark.parametrize("parse", PARSERS)
def test_parse_send_zero_width_only_is_empty(parse: Any) -> None:
    text = json.dumps(
        {"type": "send", "conversation": "c1", "client_id": "m-1", "body": "\u200b"}
    )

    with pytest.raises(ProtocolError) as raised:
        parse(text)

    assert raised.value.code == "empty_message"


@pytest.mark.parametrize(
    "body",
    ["a\u200b", "\U0001f469\u200d\U0001f4bb", "\u2764\ufe0f", "\u0928\u094d\u200d"],
    ids=["text-and-zwsp", "emoji-zwj", "emoji-variation", "devanagari-zwj"],
)
def test_clean_body_keeps_invisible_characters_in_text(body: str) -> None:
    assert clean_body(body) == body
