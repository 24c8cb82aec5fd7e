"""NativeBatch (probes straight on the host) records what ContainerBatch records, with a fake
``node`` (a shell script) standing in for Node where the test is about the harness."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from shlib.collect.native_batch import NativeBatch

pytestmark = pytest.mark.timeout(60)

#: The probe path the fake node is given (and ignores).
NO_PROBE = Path("/nonexistent/load.js")


def fake_node(tmp_path: Path, body: str) -> str:
    """A ``node`` binary that runs ``body`` (sh) whatever its arguments."""
    path = tmp_path / "node"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_a_probe_that_exits_before_ready_is_crashed_with_exit_code_and_stderr(tmp_path):
    node = fake_node(tmp_path, "echo 'node: bad option: --no-such-flag' >&2\nexit 9\n")
    t0 = time.monotonic()
    outcomes = NativeBatch(node, NO_PROBE, timeout_s=30).run(2, str(tmp_path), ("lodash",))
    assert time.monotonic() - t0 < 10  # not the 30 s ready deadline
    for out in outcomes:
        assert out.status == "crashed", (out.status, out.error)
        assert out.exit_code == 9 and not out.ready
        assert out.error == "probe exited 9 without a result: node: bad option: --no-such-flag"


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def test_started_at_is_the_spawn_like_the_engines_started_at_not_the_go_time(tmp_path):
    # Node takes 0.5 s to boot here: the process started long before it was told to go.
    node = fake_node(tmp_path, 'sleep 0.5\necho ready\nread cmd at\n'
                     'printf \'{"probe": "load", "go_wall_ms": %s, "results": []}\\n\' "$at"\n')
    outcomes = NativeBatch(node, NO_PROBE, timeout_s=30).run(2, str(tmp_path), ("lodash",))
    for out in outcomes:
        assert out.status == "ok", out.error
        created, started, finished = _ts(out.created_at), _ts(out.started_at), _ts(out.finished_at)
        assert created <= started < out.payload["go_wall_ms"] / 1e3 and started < finished
        assert started - created < 0.2, (out.created_at, out.started_at)  # the spawn, not 0.5 s later


def test_now_iso_reads_the_clock_once_even_across_a_second_boundary(monkeypatch):
    # A clock that crosses a second while the timestamp is being made: made from one reading, the
    # timestamp lies within the call; seconds and microseconds from two readings would not.
    import shlib.collect.native_batch as native_batch

    while not 0.2 < time.time() % 1 < 0.8:  # start mid-second, so the next boundary is ahead
        time.sleep(0.05)
    real_gmtime = time.gmtime

    def gmtime_then_next_second(*args):
        now = real_gmtime(*args)
        time.sleep(1.001 - time.time() % 1)  # the clock passes the next second before anything else reads it
        return now

    monkeypatch.setattr(time, "gmtime", gmtime_then_next_second)
    before = time.time()
    stamp = native_batch._now_iso()
    after = time.time()
    monkeypatch.undo()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
    assert before - 1e-6 <= _ts(stamp) <= after + 1e-6, (before, stamp, after)


def test_a_probe_that_said_ready_is_marked_ready_so_a_hang_after_go_is_the_modules(tmp_path):
    # As in a container: a probe that booted and then hangs in the load did not fail because of
    # its runtime (runner.runtime_failed), and sequence-mode rows say why nothing was measured.
    from shlib.collect.runner import runtime_failed

    node = fake_node(tmp_path, "echo ready\nread cmd at\nsleep 30\n")
    (out,) = NativeBatch(node, NO_PROBE, timeout_s=1).run(1, str(tmp_path), ("lodash",))
    assert out.status == "timeout" and out.error == "the probe did not finish within 1 s of go"
    assert out.ready and not runtime_failed(out)
