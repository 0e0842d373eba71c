"""The verdict a user reads before a consult, from the server's figures and the thresholds."""

from __future__ import annotations

from typing import Any

import pytest

from server.media.precall import judge
from server.media.schemas import PrecallStats, StreamStats

GOOD: dict[str, Any] = {
    "state": "connected",
    "elapsed_s": 3.0,
    "round_trip_ms": 40.0,
    "packet_loss": 0.0,
    "jitter_ms": 5.0,
    "bitrate_kbps": 600.0,
}


def stats(**changes: Any) -> PrecallStats:
    values = {**GOOD, **changes}
    stream = StreamStats(kind="video", packets_received=300, packets_lost=0, jitter_ms=5.0)
    return PrecallStats(peer_id="p", streams=[stream], verdict="measuring", reasons=[], **values)


def test_a_healthy_link_is_good() -> None:
    assert judge(stats(), 300) == ("good", [])


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"round_trip_ms": 450.0}, "round trip 450 ms > 300 ms"),
        ({"packet_loss": 0.05}, "packet loss 5.0% > 2%"),
        ({"jitter_ms": 45.0}, "jitter 45 ms > 30 ms"),
        ({"bitrate_kbps": 60.0}, "bitrate 60 kbit/s < 100"),
    ],
)
def test_each_threshold_missed_makes_it_poor_and_says_why(
    changes: dict[str, Any], reason: str
) -> None:
    assert judge(stats(**changes), 300) == ("poor", [reason])


def test_a_failed_connection_or_no_media_is_failed() -> None:
    assert judge(stats(state="failed"), 300) == ("failed", ["connection failed"])
    assert judge(stats(elapsed_s=12.0), 0) == (
        "failed",
        ["no audio or video reached the server"],
    )


def test_it_keeps_measuring_until_media_and_a_round_trip_arrive() -> None:
    assert judge(stats(elapsed_s=1.0), 0) == ("measuring", [])
    assert judge(stats(round_trip_ms=None), 300) == ("measuring", [])
    # A link already known to be poor is reported at once, round trip or not.
    assert judge(stats(round_trip_ms=None, packet_loss=0.1), 300)[0] == "poor"
