from __future__ import annotations

import pytest

from hodei.errors import AuthError
from hodei.server.otp import OtpRegistry, ResumeTokens


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
