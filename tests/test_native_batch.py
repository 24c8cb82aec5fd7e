"""NativeBatch (probes straight on the host) records what ContainerBatch records, with a fake
``node`` (a shell script) standing in for Node where the test is about the harness."""

from __future__ import annotations

import time
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
