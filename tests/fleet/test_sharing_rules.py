"""The rules a device applies to a parcel before anything else, in process: time, replays (issue 34, 10)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from edged.config import Config
from edged.fleet.sharing import MAX_CLOCK_SKEW_S, Sharing
from edged.fleet.parcels import Parcel, ShareError
from edged.fleet.signing import FleetTrust
from edged.fleet.trust import Identity


def _sharing(tmp_path) -> Sharing:
    cfg = Config.model_validate({"device": "yard", "state_dir": str(tmp_path)})
    backbone = SimpleNamespace(id="mnv1-this", input_size=96)
    trust = FleetTrust("broker", Identity(tmp_path / "keys", "yard", "device"))
    return Sharing(cfg, None, backbone, None, None, None, lambda: None, threading.Event(), trust)


def _parcel(ts, sha: str) -> Parcel:
    return Parcel("door", "device", "model", "classifier", {"sha256": sha * 64, "ts": ts, "backbone": "other"}, b"")


def test_a_parcel_from_the_future_is_refused_and_locks_nothing_out(tmp_path):
    """A manifest signed at ts 9e15 (or by a clock that once jumped) locked that member's later parcels out."""
    sharing = _sharing(tmp_path)
    with pytest.raises(ShareError, match="ahead of this device's clock"):
        sharing.apply(_parcel(9e15, "a"))
    # the next parcel, signed now, is judged on what it is (here: another backbone), not refused as a replay
    with pytest.raises(ShareError, match="made for backbone"):
        sharing.apply(_parcel(time.time(), "b"))
    with pytest.raises(ShareError, match="a replay"):
        sharing.apply(_parcel(time.time() - 60, "c"))
    # one remembered from a jumped clock before this rule: it no longer decides what is newer
    sharing._seen["door/model/classifier"] = {"sha256": "d" * 64, "ts": time.time() + 10 * MAX_CLOCK_SKEW_S}
    with pytest.raises(ShareError, match="made for backbone"):
        sharing.apply(_parcel(time.time(), "e"))
