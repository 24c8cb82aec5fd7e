"""Outcomes of a batch as tidy rows: one per module load per process, with the columns of the schema.

The timeline of a trial, each phase from a stated clock (``timeline``):

    create_ms      harness: the engine's create call (containers only)
    start_ms       harness -> probe: the start call (native: the spawn) until the probe's process began
                   (the probe's ``process_start_wall_ms``, its own clock)
    boot_ms        probe: Node's start until the probe's script ran (Python: the process's creation, which
                   under runc precedes the exec of Python by runc's init; start_ms then ends at that creation)
    load_ms        probe: the module's first load
    teardown_ms    harness: from 'exit' sent until the engine saw the container exit (the process's exit
                   and the sandbox's shutdown), plus the engine's removal of it (containers only; a
                   batch's containers are removed together once all have exited, and the wait for
                   the others is not counted)

Two clocks meet in start_ms: the host's (the harness's ``time.time()``) and the probe's (the
container's, which under gVisor is the sandbox's). ``clock_offset_ms`` bounds |probe - host| from
causality: a message is seen after it is sent, so the offset lies between the latest of
(probe's ready stamp - harness saw ready, probe's loaded stamp - harness saw the JSON line) and the
earliest of (probe got go - harness sent go, probe's process start - harness's start call).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shlib.collect.cgroup import cpu_ms_between
from shlib.collect.probe import Outcome
from shlib.spec.modules import parse_ref
from shlib.spec.plan import NATIVE, Batch

if TYPE_CHECKING:
    from shlib.collect.runner import Prepared


def rows_for(batch: Batch, outcomes: list[Outcome], run_id: str, prep: Prepared) -> list[dict[str, Any]]:
    """Tidy rows: one per module load per process."""
    cell = batch.cell
    gos = [o.payload["go_wall_ms"] for o in outcomes if o.payload and "go_wall_ms" in o.payload]
    first_go = min(gos) if gos else None
    batch_skew = (max(gos) - min(gos)) if gos else None
    language = getattr(cell, "language", "node")
    library = prep.libraries.get("node" if language == "node" else cell.node, prep.library)
    versions = {m["module"]: m["version"] for m in library.manifest["modules"]}
    # What the probe reports a module as: its npm name, or the name Python imports it by.
    reported = {m["module"]: m.get("import", m["module"]) for m in library.manifest["modules"]}
    image = prep.images.get(cell.node)
    if language == "python":
        interpreter = (library.manifest.get("python") or {}).get("version") or getattr(image, "python_version", None)
    else:
        interpreter = getattr(image, "node_version", None)
    engine = prep.engine or {}
    native = cell.runtime == NATIVE
    rows = []
    for out in outcomes:
        payload = out.payload or {}
        results = {r["module"]: r for r in payload.get("results", [])}
        phases = timeline(out)
        for position, spec_ in enumerate(cell.modules):
            name = parse_ref(spec_).name
            res = results.get(reported.get(name, name))
            status, error = out.status, out.error
            if status == "timeout" and out.ready and len(cell.modules) > 1:
                error = (f"{error}: in sequence mode a module that does not finish loading stops its whole "
                         "process, and the probe reports once at the end, so no module of this process was "
                         "measured (load them with load_mode isolated to see which one hangs)")
            elif status == "ok" and res is None:
                status, error = "crashed", "the probe did not report this module"
            elif status == "ok" and not res["ok"]:
                status, error = "error", res["error"]
            rows.append({
                "run_id": run_id, "batch_id": batch.batch_id, "trial_id": f"b{batch.batch_id:06d}-s{out.slot:03d}",
                "rep": batch.rep, "slot": out.slot, "runtime": cell.runtime,
                "runtime_kind": prep.runtimes[cell.runtime].kind, "concurrency": cell.concurrency,
                "module": name, "module_version": versions.get(name), "load_mode": "isolated"
                if len(cell.modules) == 1 else "sequence", "position": position, "mount": cell.mount,
                "cache": cell.cache,
                "node_version": (payload.get("node") or interpreter) if language == "node" else None,
                "image_id": None if cell.runtime == NATIVE else (image.image_id if image else None),
                "load_ms": res["load_ms"] if status == "ok" and res else None, "status": status, "error": error,
                "boot_ms": payload.get("boot_ms"), "files_loaded": res.get("files") if res else None,
                "rss_mb": payload["rss_bytes"] / 2**20 if "rss_bytes" in payload else None,
                "start_skew_ms": payload["go_wall_ms"] - first_go if "go_wall_ms" in payload and first_go else
                (0.0 if "go_wall_ms" in payload else None),
                "batch_skew_ms": batch_skew, "wall_ms": out.wall_ms,
                "created_at": _ts(out.created_at), "started_at": _ts(out.started_at),
                "finished_at": _ts(out.finished_at), "exit_code": out.exit_code,
                "engine_runtime": out.engine_runtime if cell.runtime != NATIVE else NATIVE,
                "language": language,
                "interpreter_version": payload.get("node" if language == "node" else "python") or interpreter,
                "engine": engine.get("label"), "engine_kind": "native" if native else engine.get("kind"),
                "engine_host": engine.get("name"), **phases,
            })
    return rows


def _diff(later: Any, earlier: Any) -> float | None:
    if isinstance(later, (int, float)) and isinstance(earlier, (int, float)):
        return float(later) - float(earlier)
    return None


def _sum(*parts: float | None) -> float | None:
    return None if any(p is None for p in parts) else float(sum(parts))  # type: ignore[arg-type]


def clock_window_ms(out: Outcome) -> tuple[float | None, float | None]:
    """(lowest, highest) possible offset of the probe's clock from the harness's (probe - host, ms).

    Either end is None when no event bounds it (e.g. a probe that never reported).
    """
    p = out.payload or {}
    lows = [d for d in (_diff(p.get("ready_wall_ms"), out.h_ready), _diff(p.get("loaded_wall_ms"), out.h_payload))
            if d is not None]
    highs = [d for d in (_diff(p.get("go_recv_wall_ms"), out.h_go), _diff(p.get("process_start_wall_ms"),
                                                                            out.h_start)) if d is not None]
    return (max(lows) if lows else None), (min(highs) if highs else None)


def timeline(out: Outcome) -> dict[str, float | None]:
    """The timeline and resource columns of one trial (see the module doc); None where a phase did not happen."""
    p = out.payload or {}
    low, high = clock_window_ms(out)
    mem = out.mem_peak_bytes
    proc_cpu = p.get("proc_cpu_ms")
    return {
        "create_ms": _diff(out.h_created, out.h_create),
        "start_ms": _diff(p.get("process_start_wall_ms"), out.h_start),
        "teardown_ms": _sum(_diff(out.h_exit, out.h_release), _diff(out.h_removed, out.h_remove)),
        "clock_offset_ms": max(abs(low), abs(high)) if low is not None and high is not None else None,
        "cpu_ms": cpu_ms_between(out.cpu_before_ns, out.cpu_after_ns),
        "proc_cpu_ms": float(proc_cpu) if isinstance(proc_cpu, (int, float)) else None,
        "mem_peak_mb": mem / 2**20 if mem is not None else None,
    }


def accounting_ms(out: Outcome) -> dict[str, float | None]:
    """Where a trial's wall time went: the named phases, the harness's own waits, and what is left.

    wall_ms (create call to exit seen) = create + attach + start + boot + barrier + load + report + exit
    + residual: ``attach`` the harness attaching to the container between create and start (harness
    clock); ``barrier`` ready until go (probe clock: waiting for the batch and the go lead); ``report``
    loaded until 'exit' was sent (probe -> host: the JSON line, the cgroup read); ``exit`` until the
    engine saw the container exit (the first part of teardown_ms); ``residual`` what no phase names (the
    probe's own set-up after its boot stamp and its bookkeeping between modules). The two clock crossings
    (start, report) cancel: the sum is offset-free.
    """
    p = out.payload or {}
    tl = timeline(out)
    loads = [r.get("load_ms") for r in p.get("results", [])]
    parts = {
        "create": tl["create_ms"] or 0.0,
        "attach": _diff(out.h_start, out.h_created) or 0.0,
        "start": tl["start_ms"],
        "boot": p.get("boot_ms"),
        "barrier": _diff(p.get("go_wall_ms"), p.get("ready_wall_ms")),
        "load": float(sum(x for x in loads if isinstance(x, (int, float)))) if loads else None,
        "report": _diff(out.h_release, p.get("loaded_wall_ms")),
        "exit": _diff(out.h_exit, out.h_release),
    }
    wall = _diff(out.h_exit, out.h_create)
    known = [v for v in parts.values() if v is not None]
    residual = wall - sum(known) if wall is not None and len(known) == len(parts) else None
    return {**parts, "wall": wall, "residual": residual}


def skipped_rows(batch: Batch, run_id: str, prep: Prepared, reason: str) -> list[dict[str, Any]]:
    out = [Outcome(slot=i, status="skipped", error=reason) for i in range(batch.cell.concurrency)]
    return rows_for(batch, out, run_id, prep)


def _ts(value: str | None) -> datetime | None:
    """An engine (RFC 3339, nanoseconds) or probe timestamp as an aware UTC datetime; None for the engine's zero."""
    if not value or value.startswith("0001-01-01"):
        return None
    stamp = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00")))
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC)
