"""StreamMasker: secrets never leak, whatever the chunking, and nothing is held needlessly."""

from __future__ import annotations

import base64
import random

import pytest

from hodei.domain.masking import StreamMasker, expand_secret, mask_all


def stream(masker: StreamMasker, chunks: list[bytes]) -> bytes:
    return b"".join(masker.feed(c) for c in chunks) + masker.flush()


def test_masks_plain_occurrences() -> None:
    m = StreamMasker(["hunter2"])
    assert m.feed(b"pw=hunter2 ok\n") == b"pw=*** ok\n"
    assert m.flush() == b""


def test_no_secrets_passes_through() -> None:
    m = StreamMasker([])
    assert m.feed(b"abc") == b"abc"
    assert m.flush() == b""


def test_empty_secret_ignored_and_short_secret_masked() -> None:
    m = StreamMasker(["", b"x"])
    assert stream(m, [b"axb"]) == b"a***b"


def test_secret_split_one_byte_at_a_time() -> None:
    m = StreamMasker([b"secret"])
    data = b"my secret is secret!"
    assert stream(m, [bytes([b]) for b in data]) == b"my *** is ***!"


def test_holds_back_only_a_possible_prefix() -> None:
    m = StreamMasker([b"secret"])
    assert m.feed(b"hello se") == b"hello "
    assert m.feed(b"x") == b"sex"  # no longer a prefix: released at once
    assert m.feed(b"sec") == b""
    assert m.feed(b"ret") == b"***"
    assert m.feed(b"plain") == b"plain"


def test_flush_releases_incomplete_prefix() -> None:
    m = StreamMasker([b"secret"])
    assert m.feed(b"abc secr") == b"abc "
    assert m.flush() == b"secr"


def test_longest_match_wins_across_chunks() -> None:
    m = StreamMasker([b"abc", b"abcdef"])
    assert m.feed(b"xxabc") == b"xx"  # could still become abcdef
    assert m.feed(b"def") == b"***"
    assert m.feed(b"abcx") == b"***x"


def test_add_secret_at_run_time() -> None:
    m = StreamMasker([])
    assert m.feed(b"one token") == b"one token"
    m.add("token")
    assert stream(m, [b"two tok", b"en"]) == b"two ***"


def test_multiline_secret_lines_masked_separately() -> None:
    key = "-----BEGIN KEY-----\nAAAABBBBCCCC\nab\n-----END KEY-----"
    m = StreamMasker([key])
    out = stream(m, [b"wrapped: AAAABBBBCCCC and ab stays\n"])
    assert out == b"wrapped: *** and ab stays\n"
    assert stream(m, [key.encode()]) == b"***"


def test_common_encodings_masked() -> None:
    secret = 'pa"ss word/1234'
    m = StreamMasker([secret])
    json_form = b'{"p": "pa\\"ss word/1234"}'
    assert stream(m, [json_form]) == b'{"p": "***"}'
    assert stream(m, [b"q=pa%22ss%20word%2F1234&"]) == b"q=***&"
    for prefix in (b"", b"x", b"xy"):
        encoded = base64.b64encode(prefix + secret.encode() + b"tail")
        masked = stream(m, [encoded])
        assert b"***" in masked
        for form in expand_secret(secret):
            assert form not in masked


def test_binary_secret() -> None:
    secret = b"\xff\xfe\x00\x01"
    assert stream(StreamMasker([secret]), [b"a\xff\xfe", b"\x00\x01b"]) == b"a***b"


def _random_bytes(rng: random.Random, n: int) -> bytes:
    # A small alphabet makes partial matches and overlaps between secrets frequent.
    return bytes(rng.choice(b"abcdefg\n ") for _ in range(n))


@pytest.mark.parametrize("seed", range(300))
def test_property_random_chunking_equals_reference(seed: int) -> None:
    rng = random.Random(seed)
    secrets = [_random_bytes(rng, rng.randint(1, 9)) for _ in range(rng.randint(1, 4))]
    secrets = [s for s in secrets if s.strip()] or [b"abc"]
    parts = []
    for _ in range(rng.randint(0, 12)):
        parts.append(_random_bytes(rng, rng.randint(0, 20)))
        parts.append(rng.choice(secrets))
    data = b"".join(parts) + _random_bytes(rng, rng.randint(0, 10))
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.choice([1, 1, 2, 3, rng.randint(1, 40)])
        chunks.append(data[pos : pos + size])
        pos += size

    masker = StreamMasker(secrets)
    out = stream(masker, chunks)

    assert out == mask_all(data, secrets)
    for pattern in masker.patterns:
        assert pattern not in out.replace(b"***", b"|")


@pytest.mark.parametrize("seed", range(50))
def test_property_release_is_immediate_unless_prefix(seed: int) -> None:
    rng = random.Random(1000 + seed)
    secrets = [_random_bytes(rng, rng.randint(2, 6)).strip() or b"ab" for _ in range(3)]
    masker = StreamMasker(secrets)
    released = b""
    data = b""
    for _ in range(30):
        chunk = _random_bytes(rng, rng.randint(1, 5))
        data += chunk
        released += masker.feed(chunk)
        pending = mask_all(data, secrets)
        # What is still held back is a proper prefix of some pattern, and nothing more.
        held = masker._held
        assert len(held) < max(map(len, masker.patterns))
        assert any(p.startswith(held) and p != held for p in masker.patterns) or held == b""
        assert pending.startswith(released)


SECRET = "pa\"ss w$rd/it's`1234%"


def _bash(script: str, value: str) -> bytes:
    """What bash itself prints for `script` with $S set to value (the forms jobs produce)."""
    import shutil
    import subprocess

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    env = {"S": value, "PATH": "/usr/bin:/bin"}
    return subprocess.run([bash, "-c", script], env=env, capture_output=True, check=True).stdout


@pytest.mark.parametrize(
    "script",
    [
        'printf "%q" "$S"',  # backslash-escaped
        'echo "${S@Q}"',  # single-quoted, as bash quotes it
        "python3 -c 'import shlex,os; print(shlex.quote(os.environ[\"S\"]))'",
        "python3 -c 'import json,os; print(json.dumps(os.environ[\"S\"]))'",
        'python3 -c \'import urllib.parse as u,os; print(u.quote(os.environ["S"], safe=""))\'',
        "python3 -c 'import urllib.parse as u,os; print(u.quote_plus(os.environ[\"S\"]))'",
        "python3 -c 'import urllib.parse as u,os; print(u.quote(os.environ[\"S\"]))'",
    ],
)
def test_shell_json_and_url_forms_as_real_tools_print_them(script: str) -> None:
    printed = _bash(script, SECRET)
    assert printed.strip() != SECRET.encode()  # really another form
    masked = stream(StreamMasker([SECRET]), [printed])
    assert masked.strip() in (b"***", b"'***'", b'"***"', b"$'***'"), masked


def test_double_quoted_form() -> None:
    # e.g. a tool that writes S="..." into a generated shell file
    form = SECRET.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    assert stream(StreamMasker([SECRET]), [f'S="{form}"'.encode()]) == b'S="***"'


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy"])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_base64_at_each_alignment(prefix: bytes, urlsafe: bool) -> None:
    secret = b"\xfb\xff-s3cr3t-\xfe?>value"  # bytes whose base64 has + and /
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    encoded = encode(prefix + secret + b"trailer")
    masked = stream(StreamMasker([secret]), [encoded])
    assert b"***" in masked
    # Only the characters mixing secret and other bits are left: at most 2 on each side.
    assert len(masked) <= len(b"***") + 4 + len(encode(prefix + b"trailer"))


def test_secret_split_across_a_4k_chunk_boundary() -> None:
    data = b"x" * 4094 + b"s3cr3t-value" + b"y" * 10
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    assert stream(StreamMasker(["s3cr3t-value"]), chunks) == b"x" * 4094 + b"***" + b"y" * 10


def test_multiline_secret_printed_line_by_line_with_crlf() -> None:
    key = "line-one-AAAA\nline-two-BBBB\nline-three-CCCC"
    m = StreamMasker([key])
    out = stream(m, [b"line-two-BBBB\r\n", b"line-three-", b"CCCC\r\n", b"line-one-AAAA"])
    assert out == b"***\r\n***\r\n***"


def test_too_short_values_are_flagged() -> None:
    from hodei.domain.masking import MIN_SECRET_LENGTH, secret_too_short

    assert MIN_SECRET_LENGTH == 4
    assert secret_too_short("abc") and secret_too_short(b"")
    assert not secret_too_short("abcd")


def test_mask_whole_message() -> None:
    m = StreamMasker(["hunter22"])
    assert m.mask(b"error: bad token hunter22") == b"error: bad token ***"
    assert StreamMasker([]).mask(b"plain") == b"plain"
