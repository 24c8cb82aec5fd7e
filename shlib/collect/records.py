"""Outcomes of a batch as tidy rows: one per module load per process, with the columns of the schema."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
                "engine_host": engine.get("name"),
            })
    return rows


def skipped_rows(batch: Batch, run_id: str, prep: Prepared, reason: str) -> list[dict[str, Any]]:
    out = [Outcome(slot=i, status="skipped", error=reason) for i in range(batch.cell.concurrency)]
    return rows_for(batch, out, run_id, prep)


def _ts(value: str | None) -> datetime | None:
    """An engine (RFC 3339, nanoseconds) or probe timestamp as an aware UTC datetime; None for the engine's zero."""
    if not value or value.startswith("0001-01-01"):
        return None
    stamp = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00")))
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC)
