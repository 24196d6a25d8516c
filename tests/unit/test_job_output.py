"""JobOutput: ::add-mask::, masking and the output limit, as the agent applies them."""

from __future__ import annotations

import base64

from hodei.domain.job_output import SHORT_VALUE_NOTE, JobOutput, human_size

BIG = 1 << 30


def feed_all(out: JobOutput, chunks: list[bytes]) -> bytes:
    return b"".join(out.feed(c) for c in chunks) + out.flush()


def test_secrets_and_run_time_masks() -> None:
    out = JobOutput(["hunter22"], BIG)
    got = feed_all(
        out,
        [b"a hunter22\n", b"::add-mask::tok", b"en-XYZ\n", b"token-XYZ and ", b"token-XYZ\n"],
    )
    assert got == b"a ***\n*** and ***\n"


def test_run_time_mask_applies_to_its_encodings_and_to_messages() -> None:
    out = JobOutput([], BIG)
    value = b"generated-password-1"
    got = feed_all(out, [b"::add-mask::" + value + b"\n", base64.b64encode(value) + b"\n"])
    assert got.startswith(b"***") and len(got) <= len(b"***\n") + 2  # + padding bits
    assert out.mask_text("failed with generated-password-1") == "failed with ***"


def test_short_run_time_value_is_refused_visibly() -> None:
    out = JobOutput([], BIG)
    assert feed_all(out, [b"::add-mask::ab\nab\n"]) == SHORT_VALUE_NOTE + b"ab\n"


def test_output_limit_truncates_visibly_and_counts_the_rest() -> None:
    out = JobOutput([], 10)
    first = out.feed(b"0123456789AB")
    assert first.startswith(b"0123456789\n[hodei: output limit of 10 bytes reached")
    assert out.truncated
    assert out.feed(b"x" * 1000) == b""
    assert out.flush() == b"[hodei: 1002 more bytes of output discarded]\n"


def test_output_exactly_at_the_limit_is_not_truncated() -> None:
    out = JobOutput([], 4)
    assert out.feed(b"abcd") == b"abcd"
    assert out.flush() == b""
    assert not out.truncated


def test_limit_counts_masked_bytes() -> None:
    out = JobOutput(["s3cr3t-long-value"], 8)
    assert out.feed(b"s3cr3t-long-value\n") == b"***\n"
    assert out.feed(b"abcd") == b"abcd"
    assert out.feed(b"e").startswith(b"\n[hodei: output limit of 8 bytes")


def test_human_size() -> None:
    assert human_size(100 * 1024 * 1024) == "100 MiB"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(100) == "100 bytes"
