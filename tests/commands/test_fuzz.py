"""Bad input at scale: property-based fuzzing of every command against a real daemon's handlers, and of config files.

1,000 command payloads run on every CI submission; 10,000 with `pytest -m slow`. Every payload gets
an answer; a payload that fails validation is answered with an error naming the field (or the
payload); no handler crashes (an "internal error" reply is a crash); the daemon keeps serving, with
its thread count and the memory its own code holds (traced with tracemalloc: the test process also
holds hypothesis' data) bounded.
"""

from __future__ import annotations

import json
import threading
import tracemalloc

import pytest
from conftest import backbone_settings, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.commands.dispatch import CollectingResponder
from edged.commands.schema import COMMANDS, parse
from edged.config import load_config
from edged.daemon.daemon import Daemon
from edged.errors import CommandError, ConfigError

SPECIAL_STRINGS = ["../x", "../../etc/passwd", "/tmp/x", "./knn", "knn/", "a\x00b", "%2e%2e%2f", "+", "#", "a/+/b",
                   "é" * 70, "\U0001f600" * 20, "x" * 70_000, "", " ", "knn", "classifier", "v1", "v999999", "v0",
                   "float32", "int8", "frozen", "NaN", "-1", "1e309", "null", "\n", "label/#"]
FIELDS = sorted({f for model in COMMANDS.values() for f in model.model_fields} | {"zz", "", "__class__", "id"})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40) | st.sampled_from(SPECIAL_STRINGS),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner,
                                                                max_size=5),
    max_leaves=25)


def _encode(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


payloads = st.one_of(
    st.binary(max_size=300),  # random bytes
    st.binary(max_size=100).map(lambda b: b"\xff\xfe" + b),  # invalid UTF-8
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(_encode),  # wrong types, huge numbers
    json_values.map(_encode),  # not an object, nesting
    st.integers(1, 200_000).map(lambda n: b'{"label": ' + b"[" * n + b"]" * n + b"}"),  # deep nesting
    st.integers(60_000, 80_000).map(lambda n: b'{"label": "' + b"a" * n + b'"}'),  # 64 KiB+
    st.sampled_from(SPECIAL_STRINGS).map(lambda s: _encode({"label": s, "model": s, "head": s, "heads": [s],
                                                            "version": s})),  # path-like names, wildcards
)
names = st.sampled_from(sorted(COMMANDS)) | st.sampled_from(["reboot", "../x", "", "capture/x", "#"])


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def live_daemon(tmp_path_factory, backbone_root):
    """A daemon in this process (no MQTT), serving a synthetic source: its real handlers take the payloads."""
    import shutil

    from conftest import prebuilt_backbones

    settings = backbone_settings("none", input_size=96)
    state = tmp_path_factory.mktemp("fuzz") / "state"
    shutil.copytree(prebuilt_backbones(backbone_root, settings) / "backbones", state / "backbones")
    bb = [f"backbone.{k}={json.dumps(v)}" for k, v in settings.items()]
    cfg = load_config(None, [f"state_dir='{state}'", *bb, "mqtt.enabled=false", "source.uri='synthetic:clutter=2'",
                             "source.fps=30", "web.enabled=false", "runtime.precision='float32'",
                             "heads.active=['knn']", "review.enabled=false", "trainer.job_timeout_s=60"])
    daemon = Daemon(cfg)
    daemon.start()
    loop = threading.Thread(target=daemon.run, daemon=True)
    loop.start()
    yield daemon
    daemon.stop.set()
    loop.join(10)
    daemon.shutdown()


def _answer(daemon, name: str, payload: bytes) -> CollectingResponder:
    reply = CollectingResponder()
    daemon.dispatcher.run(name, payload, reply)
    if not reply.finished.wait(2.0):  # a capture or job answers at its end: cancel it
        daemon.dispatcher.run("cancel", b"{}", CollectingResponder())
        reply.finished.wait(30)
    return reply


def _edged_memory() -> int:
    """Bytes traced to allocations made by edged's own code (hypothesis keeps its own data, not counted)."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/edged/*"),
                                                          tracemalloc.Filter(True, "*/plugins/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


def _fuzz(daemon, examples: int):
    tracemalloc.start()
    threads_before, rss_before, edged_before = threading.active_count(), _rss_mb(), _edged_memory()
    frames_before = daemon.loop.frames_seen
    counts = {"ok": 0, "invalid": 0, "refused": 0}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(name=names, payload=payloads)
    def check(name, payload):
        try:
            parse(name, payload)
            expected = None
        except CommandError as e:
            expected = str(e)
        reply = _answer(daemon, name, payload)
        assert reply.ok is not None, f"no answer to {name} {payload[:80]!r}"
        if expected is not None:
            counts["invalid"] += 1
            assert reply.ok is False and reply.error == expected
            assert expected.startswith((f"{name}.", "payload", "unknown command")), expected
        elif reply.ok:
            counts["ok"] += 1
        else:
            counts["refused"] += 1
            assert reply.error and "internal error" not in reply.error, (name, payload[:200], reply.error)

    try:
        check()
        after = daemon.loop.frames_seen  # frames flow on after the last payload
        wait_until(lambda: daemon.loop.frames_seen > after + 5, 30, what="frames served after the fuzz")
        grown_mb = (_edged_memory() - edged_before) / 2 ** 20
    finally:
        tracemalloc.stop()
    assert daemon.loop.frames_seen > frames_before, "the daemon stopped serving"
    assert threading.active_count() <= threads_before + 3, (threads_before, threading.active_count())
    assert grown_mb < 20, f"memory held by edged's code grew {grown_mb:.1f} MB"
    print(f"fuzz: {examples} payloads {counts}; memory held by edged's code {grown_mb:+.1f} MB (process RSS "
          f"{rss_before:.0f} -> {_rss_mb():.0f} MB, hypothesis included); threads {threading.active_count() - threads_before:+d}")


@pytest.mark.heavy
def test_fuzz_commands(live_daemon):
    _fuzz(live_daemon, 200)  # CI's share (about 30 s here); the 10,000 run below is `-m slow`


@pytest.mark.slow
def test_fuzz_commands_10k(live_daemon):
    _fuzz(live_daemon, 10_000)


toml_values = st.sampled_from(["1", "-1", "0", "1e400", "-1e400", "nan", "inf", "true", "false", '"x"', '""', "[1, 2]",
                               "{ a = 1 }", '"../x"', '"/tmp/x"', '"a\\u0000b"', "99999999999999999999999", '"é"',
                               '"synthetic"', '"rtsp://u:p@h/x"', "[]", "'''multi\nline'''", "= =", '"+/#"'])
config_keys = st.sampled_from(["device", "state_dir", "log_level", "plugins_dir", "source.uri", "source.fps",
                               "source.width", "backbone.alpha", "backbone.family", "backbone.input_size",
                               "runtime.num_threads", "runtime.precision", "heads.active", "heads.knn.k",
                               "heads.classifier.folds", "mqtt.port", "mqtt.qos", "mqtt.prefix", "mqtt.tls.insecure",
                               "serve.max_fps", "capture.near_copy", "capture.dedupe", "web.port", "trainer.job_timeout_s", "zz.top",
                               "mqtt.zz", "heads.nosuchhead.x"])


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(entries=st.lists(st.tuples(config_keys, toml_values), min_size=1, max_size=4))
def test_fuzz_config_files(tmp_path_factory, entries):
    """Any TOML file loads, or fails with ConfigError naming the file (and the key); never anything else."""
    sections: dict[str, list[str]] = {}
    for key, value in entries:
        table, _, leaf = key.rpartition(".")
        sections.setdefault(table, []).append(f"{leaf} = {value}")
    text = "\n".join(sections.pop("", []))
    for table, lines in sections.items():
        text += f"\n[{table}]\n" + "\n".join(lines)
    path = tmp_path_factory.mktemp("cfg") / "edged.toml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as e:
        assert str(path.name) in str(e), str(e)
