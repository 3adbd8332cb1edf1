from __future__ import annotations

import stat
import time
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from service.access import tokens
from service.errors import Unauthorized

SECRET = "unit-test-secret"
NOW = 1_800_000_000.0
KEY = UUID("0c5f3a52-7b7e-4a3d-9d43-3b3c7f2b8a11")  # the key a token is issued through


def test_an_issued_token_verifies_for_its_generation_and_names_its_key() -> None:
    generation_id = uuid4()
    token = tokens.issue(SECRET, generation_id, 3600, KEY, now=NOW)
    assert tokens.verify(SECRET, generation_id, token, now=NOW) == KEY
    tokens.verify(SECRET, generation_id, token, now=NOW + 3599)


def test_a_token_carries_its_expiry_and_a_urlsafe_signature() -> None:
    token = tokens.issue(SECRET, uuid4(), 60, KEY, now=NOW)
    expires, key_hex, signature = token.split(".")
    assert int(expires) == int(NOW) + 60
    assert key_hex == KEY.hex
    assert signature
    assert set(signature) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_token_for_one_generation_is_refused_for_another() -> None:
    token = tokens.issue(SECRET, uuid4(), 3600, KEY, now=NOW)
    with pytest.raises(Unauthorized, match="not valid for this generation"):
        tokens.verify(SECRET, uuid4(), token, now=NOW)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    generation_id = uuid4()
    token = tokens.issue("some-other-secret", generation_id, 3600, KEY, now=NOW)
    with pytest.raises(Unauthorized):
        tokens.verify(SECRET, generation_id, token, now=NOW)


def test_a_tampered_signature_is_refused() -> None:
    generation_id = uuid4()
    token = tokens.issue(SECRET, generation_id, 3600, KEY, now=NOW)
    signed, _, signature = token.rpartition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    for bad in (f"{signed}.{flipped}", f"{signed}.{signature[:-1]}", f"{signed}.{signature}x"):
        with pytest.raises(Unauthorized):
            tokens.verify(SECRET, generation_id, bad, now=NOW)


def test_extending_the_expiry_of_a_token_breaks_its_signature() -> None:
    generation_id = uuid4()
    token = tokens.issue(SECRET, generation_id, 60, KEY, now=NOW)
    expires, _, signature = token.partition(".")
    extended = f"{int(expires) + 86_400}.{signature}"
    with pytest.raises(Unauthorized, match="not valid"):
        tokens.verify(SECRET, generation_id, extended, now=NOW)


def test_an_expired_token_is_refused() -> None:
    generation_id = uuid4()
    token = tokens.issue(SECRET, generation_id, 60, KEY, now=NOW)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(SECRET, generation_id, token, now=NOW + 61)


def test_a_token_issued_two_hours_ago_with_a_one_hour_ttl_is_expired_now() -> None:
    generation_id = uuid4()
    token = tokens.issue(SECRET, generation_id, 3600, KEY, now=time.time() - 7200)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(SECRET, generation_id, token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "no-dot-at-all",
        "1800000000",
        "1800000000.",
        ".c2lnbmF0dXJl",
        "-5.c2lnbmF0dXJl",
        "12a.c2lnbmF0dXJl",
        " 1800000000.c2lnbmF0dXJl",
        "1e9.c2lnbmF0dXJl",
        # Unicode digits: str.isdigit() says yes, int() may say no (or parse them).
        "\u00b2.c2lnbmF0dXJl",
        "\u0661\u0662\u0663.c2lnbmF0dXJl",
        # An expiry int() refuses (Python caps conversions at 4,300 digits) or one no clock
        # reaches: bounded before anything reads it.
        "9" * 5000 + ".c2lnbmF0dXJl",
        "9" * 40 + ".c2lnbmF0dXJl",
        # hmac.compare_digest raises TypeError on a str that is not ASCII.
        "1800000000.c2lnbmF0dXJl\u00e9",
        "1800000000.c2lnbmF0dXJl\x00",
        "1800000000." + "A" * 5000,
    ],
)
def test_a_malformed_token_is_unauthorized_not_a_crash(token: str) -> None:
    with pytest.raises(Unauthorized):
        tokens.verify(SECRET, uuid4(), token, now=NOW)


def test_the_signature_covers_the_expiry_as_written_not_its_value() -> None:
    """The token is checked as text: nothing is parsed out of it until its MAC checks out, so
    another spelling of the same expiry (a leading zero) is another, unsigned, token."""
    generation_id = uuid4()
    expires, key_hex, signature = tokens.issue(SECRET, generation_id, 3600, KEY, now=NOW).split(".")
    with pytest.raises(Unauthorized, match="not valid"):
        tokens.verify(SECRET, generation_id, f"0{expires}.{key_hex}.{signature}", now=NOW)


def test_a_token_moved_to_another_key_is_not_valid() -> None:
    generation_id = uuid4()
    expires, _, signature = tokens.issue(SECRET, generation_id, 3600, KEY, now=NOW).split(".")
    with pytest.raises(Unauthorized, match="not valid"):
        tokens.verify(SECRET, generation_id, f"{expires}.{uuid4().hex}.{signature}", now=NOW)


def test_verification_uses_the_generation_id_not_its_spelling() -> None:
    generation_id = uuid4()
    token = tokens.issue(SECRET, generation_id, 3600, KEY, now=NOW)
    tokens.verify(SECRET, UUID(str(generation_id).upper()), token, now=NOW)


def test_load_or_create_secret_creates_a_private_file_and_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "stream-token-secret"
    first = tokens.load_or_create_secret(path)
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert path.read_text().strip() == first
    assert tokens.load_or_create_secret(path) == first


def test_load_or_create_secret_makes_a_different_secret_per_file(tmp_path: Path) -> None:
    one = tokens.load_or_create_secret(tmp_path / "a")
    two = tokens.load_or_create_secret(tmp_path / "b")
    assert one != two


def test_load_or_create_secret_keeps_an_existing_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("operator-chosen-secret\n")
    assert tokens.load_or_create_secret(path) == "operator-chosen-secret"


def test_an_empty_secret_file_is_never_used_as_the_secret(tmp_path: Path) -> None:
    """A crash between creating the file and writing it leaves it empty; signing with an empty
    HMAC key would let anyone who knows that forge stream tokens."""
    path = tmp_path / "secret"
    path.touch(mode=0o600)
    secret = tokens.load_or_create_secret(path)
    assert secret.strip()
