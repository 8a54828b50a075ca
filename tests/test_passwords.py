"""The check on new staff passwords: length, common ones, runs and names."""

from __future__ import annotations

import pytest

from relay.passwords import check_new_password


@pytest.mark.parametrize(
    "password",
    [
        "short",
        "x" * 1025,
        "password1234",
        "Password1234",
        "QWERTY123456",
        "qwertyuiopasdf",
        "1qaz2wsx3edc4rfv",
        "zyxwvutsrqponm",
        "aaaaaaaaaaaaaaaa",
        "abababababababab",
        "victimsupport2024",
        "robin-is-my-name",
    ],
)
def test_weak_password_rejected(password: str) -> None:
    with pytest.raises(ValueError):
        check_new_password(password, "robin", "Robin")


@pytest.mark.parametrize(
    "password",
    ["lantern-orchard-velvet-7", "correct horse battery", "Tq8#vL2p!mZr"],
)
def test_strong_password_accepted(password: str) -> None:
    check_new_password(password, "robin", "Robin")


def test_short_names_not_checked() -> None:
    check_new_password("lantern-orchard-velvet-7", "la", "")
