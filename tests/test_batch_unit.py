"""ContainerBatch without an engine: the exact create arguments, and the batch logic against the
fake client of tests/fake_engine.py (barrier, crashes, timeouts, start failures, cleanup)."""

from __future__ import annotations

import json
import time

import pytest
import requests.exceptions
from fake_engine import FakeClient, Script

from shlib.collect.docker_batch import ContainerBatch
from shlib.errors import EngineUnavailable

MOUNT = {"volumes": {"shlib-lib-abc": {"bind": "/shlib/lib", "mode": "ro"}}}

pytestmark = pytest.mark.timeout(60)


def _batch(client: FakeClient, timeout_s: float = 10.0) -> tuple[ContainerBatch, dict]:
    batch = ContainerBatch(client, timeout_s=timeout_s, memory_mb=256, pids_limit=64,  # type: ignore[arg-type]
                           labels={"shlib.run_id": "run-1"})
    kwargs = batch.create_kwargs("shlib-node:20", "runsc-test", ("lodash",), "/shlib/lib", MOUNT,
                                 {"shlib.batch_id": "7"})
    return batch, kwargs


def _all_removed_by_the_batch(client: FakeClient) -> None:
    """Every container was removed, by the batch itself: its final sweep (the safety net for
    containers it never got hold of) found none left."""
    assert client.containers_made and not client.left(), [c.name for c in client.left()]
    assert client.listed and not any(client.listed), client.listed


def _by_status(outcomes) -> dict[str, list]:
    out: dict[str, list] = {}
    for o in outcomes:
        out.setdefault(o.status, []).append(o)
    return out


# --- the container's arguments ---------------------------------------------------------------------

def test_create_kwargs_are_the_locked_down_probe_container():
    _, kwargs = _batch(FakeClient())
    assert kwargs == {
        "image": "shlib-node:20",
        "command": ["node", "/opt/shlib/load.js",
                    json.dumps({"lib": "/shlib/lib", "modules": ["lodash"], "barrier": True, "hold": True})],
        "runtime": "runsc-test",
        "network_mode": "none",
        "user": "1000:1000",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "pids_limit": 64,
        "mem_limit": "256m",
        "stdin_open": True,
        "tty": False,
        "labels": {"shlib.managed": "true", "shlib.run_id": "run-1", "shlib.batch_id": "7"},
        "volumes": {"shlib-lib-abc": {"bind": "/shlib/lib", "mode": "ro"}},
    }


def test_run_creates_with_those_arguments_plus_one_token_per_batch():
    client = FakeClient()
    batch, kwargs = _batch(client)
    batch.run(3, kwargs)
    batch.run(2, kwargs)
    tokens = [created["labels"].pop("shlib.batch_token") for created in client.created]
    assert client.created == [kwargs] * 5  # nothing else changed
    assert len(set(tokens[:3])) == 1 and len(set(tokens[3:])) == 1 and tokens[0] != tokens[3]
    assert client.attach_params == [{"stdin": 1, "stdout": 1, "stream": 1}] * 5


# --- the batch ----------------------------------------------------------------------------------

def test_all_are_released_together_by_the_barrier():
    # Probes that boot at different speeds: none hears go before the slowest is ready.
    client = FakeClient(*[Script(ready_delay_s=0.1 * i) for i in range(5)])
    batch, kwargs = _batch(client)
    outcomes = batch.run(5, kwargs)
    assert [o.status for o in outcomes] == ["ok"] * 5, [o.error for o in outcomes]
    assert all(o.ready and o.exit_code == 0 and o.payload["results"][0]["module"] == "lodash" for o in outcomes)
    last_ready = max(c.ready_at for c in client.containers_made)
    assert all(c.go_at is not None and c.go_at >= last_ready for c in client.containers_made)
    assert len({o.payload["go_wall_ms"] for o in outcomes}) == 1  # one go message, one start time
    _all_removed_by_the_batch(client)


def test_a_probe_that_crashes_before_ready_is_crashed_with_its_stderr_not_a_timeout():
    client = FakeClient(Script(), Script("crash", stderr="Error: Cannot find module '/opt/shlib/load.js'"))
    batch, kwargs = _batch(client, timeout_s=30)
    t0 = time.monotonic()
    outcomes = batch.run(2, kwargs)
    assert time.monotonic() - t0 < 10  # not the 30 s ready deadline
    by = _by_status(outcomes)
    assert sorted(by) == ["crashed", "ok"], [(o.status, o.error) for o in outcomes]
    (crashed,) = by["crashed"]
    assert crashed.exit_code == 1 and not crashed.ready
    assert "Error: Cannot find module '/opt/shlib/load.js'" in crashed.error
    _all_removed_by_the_batch(client)


def test_a_probe_never_ready_is_a_timeout_and_killed_the_others_still_run():
    client = FakeClient(Script("never_ready"), Script(), Script())
    batch, kwargs = _batch(client, timeout_s=1.0)
    outcomes = batch.run(3, kwargs)
    by = _by_status(outcomes)
    assert sorted(by) == ["ok", "timeout"] and len(by["ok"]) == 2, [(o.status, o.error) for o in outcomes]
    (late,) = by["timeout"]
    assert late.error == "the probe was not ready within 1 s" and not late.ready
    assert "kill" in client.containers_made[0].calls
    _all_removed_by_the_batch(client)


def test_a_probe_that_hangs_after_go_is_a_timeout_and_killed():
    client = FakeClient(Script("hang"))
    batch, kwargs = _batch(client, timeout_s=1.0)
    (out,) = batch.run(1, kwargs)
    assert out.status == "timeout" and out.ready and out.error == "the probe did not finish within 1 s of go"
    assert "kill" in client.containers_made[0].calls
    _all_removed_by_the_batch(client)


def test_a_start_failure_keeps_the_engine_message():
    message = "OCI runtime create failed: runsc did not terminate successfully: exit status 2"
    client = FakeClient(Script(start_error=message), Script())
    batch, kwargs = _batch(client)
    outcomes = batch.run(2, kwargs)
    by = _by_status(outcomes)
    assert sorted(by) == ["ok", "start_failed"], [(o.status, o.error) for o in outcomes]
    (failed,) = by["start_failed"]
    assert failed.error == message and not failed.ready
    _all_removed_by_the_batch(client)


def test_an_oom_kill_is_a_crash():
    client = FakeClient(Script("oom"))
    batch, kwargs = _batch(client)
    (out,) = batch.run(1, kwargs)
    assert out.status == "crashed" and out.error == "killed by the memory limit (OOM)" and out.exit_code == 137
    _all_removed_by_the_batch(client)


def test_engine_timestamps_and_runtime_are_copied():
    client = FakeClient()
    batch, kwargs = _batch(client)
    (out,) = batch.run(1, kwargs)
    attrs = client.containers_made[0].attrs
    assert out.created_at == attrs["Created"] and out.created_at.endswith("123Z")
    assert out.started_at == attrs["State"]["StartedAt"] and not out.started_at.startswith("0001")
    assert out.finished_at == attrs["State"]["FinishedAt"] and not out.finished_at.startswith("0001")
    assert out.engine_runtime == "runsc-test"


# --- every container is removed, whatever happens -----------------------------------------------

def test_containers_are_removed_when_the_engine_goes_away_mid_batch():
    gone = requests.exceptions.ConnectionError("('Connection aborted.', ConnectionRefusedError(111))")
    client = FakeClient(Script(), Script(wait_raises=gone), Script())
    batch, kwargs = _batch(client)
    with pytest.raises(EngineUnavailable, match="stopped answering during a batch"):
        batch.run(3, kwargs)
    assert len(client.containers_made) == 3
    _all_removed_by_the_batch(client)


def test_a_container_whose_create_answer_is_lost_is_removed_by_the_sweep():
    # The engine made the container but the call raised (an interrupt while it was creating it):
    # the batch never held it, only its batch token finds it.
    client = FakeClient(Script(), Script(create_raises=KeyboardInterrupt()), Script())
    batch, kwargs = _batch(client)
    with pytest.raises(KeyboardInterrupt):
        batch.run(3, kwargs)
    lost = client.containers_made[1]  # (the third may not be created at all: the batch stopped)
    assert lost.removed and not client.left(), [c.name for c in client.left()]
    assert lost.name in client.listed[-1]  # found by the sweep


# --- wall_ms measures one container, not the harness's queue ------------------------------------

def test_wall_ms_excludes_waiting_for_a_worker_with_more_than_16_containers():
    # Every wait() answers after 0.6 s: each container's wall time is about that, whatever its
    # place in the batch (more containers than the batch has workers for creating them).
    delay_s, n = 0.6, 20
    client = FakeClient(default=Script(wait_delay_s=delay_s))
    batch, kwargs = _batch(client)
    outcomes = batch.run(n, kwargs)
    assert [o.status for o in outcomes] == ["ok"] * n, [o.error for o in outcomes]
    walls = sorted(o.wall_ms for o in outcomes)
    assert walls[0] >= delay_s * 1e3
    assert walls[-1] - walls[0] < delay_s * 1e3 / 2, walls
    _all_removed_by_the_batch(client)
