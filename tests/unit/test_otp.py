from __future__ import annotations

import pytest

from hodei.errors import AuthError
from hodei.server.security.otp import OtpRegistry, ResumeTokens


def test_otp_is_single_use_and_bound_to_its_worker() -> None:
    otps = OtpRegistry()
    otp = otps.issue("w-1", ttl_s=60, labels={"a": "b"})
    redeemed = otps.redeem(otp)
    assert redeemed.worker_id == "w-1" and redeemed.labels == {"a": "b"}
    with pytest.raises(AuthError):
        otps.redeem(otp)  # replay


def test_forged_and_expired_otps_are_refused() -> None:
    otps = OtpRegistry()
    with pytest.raises(AuthError):
        otps.redeem("hwp_forged")
    expired = otps.issue("w-2", ttl_s=-1)
    with pytest.raises(AuthError):
        otps.redeem(expired)


def test_revoking_a_worker_voids_its_otp() -> None:
    otps = OtpRegistry()
    otp = otps.issue("w-3", ttl_s=60)
    otps.revoke_worker("w-3")
    with pytest.raises(AuthError):
        otps.redeem(otp)


def test_resume_tokens_verify_only_their_own_mac() -> None:
    tokens = ResumeTokens(b"k" * 32)
    token = tokens.issue("w-1", "s-1")
    assert tokens.verify(token) == ("w-1", "s-1")
    assert ResumeTokens(b"k" * 32).verify(token) == ("w-1", "s-1")  # survives a restart
    for bad in ("", "w-1.s-1", token + "0", "w-2.s-1." + token.split(".")[2]):
        with pytest.raises(AuthError):
            tokens.verify(bad)
    with pytest.raises(AuthError):
        ResumeTokens(b"x" * 32).verify(token)


def test_failures_from_one_source_are_rate_limited_then_forgiven() -> None:
    from hodei.server.security import otp as otp_module

    otps = OtpRegistry()
    clock = [1000.0]
    otps._now = lambda: clock[0]
    valid = otps.issue("w-9", ttl_s=3600)
    for _ in range(otp_module.MAX_FAILURES):
        with pytest.raises(AuthError, match="invalid, expired or already used"):
            otps.redeem("hwp_guess", source="10.0.0.9")
    # Blocked now, even with a valid OTP (which is not spent by the refusal).
    with pytest.raises(AuthError, match=r"too many failed worker registrations from 10\.0\.0\.9"):
        otps.redeem(valid, source="10.0.0.9")
    assert otps.redeem(valid, source="127.0.0.1").worker_id == "w-9"  # other sources unaffected
    again = otps.issue("w-10", ttl_s=3600)
    clock[0] += otp_module.FAILURE_WINDOW_S + 1
    assert otps.redeem(again, source="10.0.0.9").worker_id == "w-10"


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:5000", "127.0.0.1"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:47302", "::1"),
        ("unix:/tmp/sock", "unix"),
        ("10.1.2.3", "10.1.2.3"),
    ],
)
def test_source_host_drops_the_port(peer: str, host: str) -> None:
    from hodei.server.security.otp import source_host

    assert source_host(peer) == host


async def test_concurrent_replays_let_exactly_one_registration_through() -> None:
    import asyncio

    otps = OtpRegistry()
    otp = otps.issue("w-11", ttl_s=60)

    async def attempt() -> str:
        await asyncio.sleep(0)
        return otps.redeem(otp, source="127.0.0.1").worker_id

    results = await asyncio.gather(*(attempt() for _ in range(50)), return_exceptions=True)
    assert sum(1 for r in results if r == "w-11") == 1
    assert all(isinstance(r, AuthError) for r in results if r != "w-11")
