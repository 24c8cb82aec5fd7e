"""A campaign: one experiment on several engines, one after another, each into a results directory of its own.

    CAMPAIGN_DIR/
      campaign.json          the spec, every engine's label, directory, status and error
      engines/NN-<label>/    an ordinary results directory per engine (``shlib run --resume`` works on it)

Every engine name is checked before the first starts (a malformed one stops everything). An engine
that cannot be reached, or goes away mid-run, is recorded in campaign.json and skipped: the others
still run, and its finished batches stay in its directory. ``shlib analyze CAMPAIGN_DIR`` merges the
runs, engine as a factor.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from shlib.collect.engine import EngineTarget, connect, resolve_engine
from shlib.collect.runner import run_experiment
from shlib.errors import EngineUnavailable, Interrupted, ResultsError, ShlibError, SpecError
from shlib.paths import runs_dir
from shlib.results.store import CAMPAIGN_FILE, read_campaign, write_json
from shlib.spec.spec import Spec, make_spec


def engine_dir(position: int, label: str) -> str:
    """``engines/NN-<label as a file name>``: ordered as the spec lists the engines."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.")[:60] or "engine"
    return f"engines/{position:02d}-{slug}"


def check_engines(spec: Spec) -> list[EngineTarget]:
    """Every engine of the campaign resolved (malformed names refused before anything starts), labels unique."""
    if not spec.engines:
        raise SpecError("engines: a campaign needs at least one engine")
    targets = []
    for name in spec.engines:
        try:
            targets.append(resolve_engine(name))
        except EngineUnavailable as exc:
            raise SpecError(f"engines: {exc}".replace("--engine ", "")) from None
    labels = [t.label for t in targets]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise SpecError(f"engines: {', '.join(twice)} named twice (labels drop credentials: two users of one "
                        "host are one engine)")
    return targets


def run_campaign(spec: Spec | dict[str, Any], out_dir: str | Path | None = None, resume: bool = False,
                 progress: bool = True, run: Callable[..., Path] = run_experiment) -> Path:
    """Run ``spec`` on each of its ``engines`` in turn into ``out_dir`` (default runs/campaign-...); return it.

    All engines share one seed, so each runs the same plan in the same order. ``resume`` completes a
    campaign: complete engines are left alone, the others resumed (or started). ``run`` is
    ``run_experiment`` (replaceable in tests).
    """
    spec = make_spec(spec)
    out = Path(out_dir) if out_dir is not None else None
    record = read_campaign(out) if out is not None and (out / CAMPAIGN_FILE).exists() else None
    if record is not None and not resume:
        raise ResultsError(f"--out {out} already holds a campaign; pass --resume to complete it, or choose "
                           "another directory")
    if record is not None:
        spec = make_spec(record["spec"])
    elif resume:
        raise ResultsError(f"--resume: {out} holds no campaign to resume")
    spec = spec.with_seed()
    targets = check_engines(spec)
    if out is None:
        out = runs_dir() / f"campaign-{datetime.now(UTC):%Y%m%dT%H%M%S}-{spec.name.replace(' ', '_')}"
    if record is None and out.exists() and any(out.iterdir()):
        raise ResultsError(f"--out {out} is not empty and holds no campaign; choose an empty or new directory")
    out.mkdir(parents=True, exist_ok=True)
    engines = [{"engine": name, "label": t.label, "dir": engine_dir(i + 1, t.label), "status": "pending",
                "error": None, "run_id": None} for i, (name, t) in enumerate(zip(spec.engines or [], targets,
                                                                                  strict=True))]
    if record is not None:
        before = {e["label"]: e for e in record["engines"]}
        engines = [{**e, **{k: before[e["label"]][k] for k in ("status", "error", "run_id")}}
                   if e["label"] in before else e for e in engines]
    campaign = {"spec": spec.as_dict(), "engines": engines, "started_at": (record or {}).get("started_at")
                or datetime.now(UTC).isoformat(), "finished_at": None}
    write_json(out / CAMPAIGN_FILE, campaign)
    single = spec.model_copy(update={"engines": None})
    try:
        for i, (entry, target) in enumerate(zip(engines, targets, strict=True), 1):
            if entry["status"] == "complete":
                continue
            if progress:
                tqdm.write(f"shlib: engine {i}/{len(engines)}: {target.label}")
            run_dir = out / entry["dir"]
            try:
                client = connect(pool_size=4 * max(spec.concurrency) + 8,
                                 timeout_s=max(120.0, spec.timeout_s + 60), engine=target)
            except EngineUnavailable as exc:
                entry.update(status="unreachable", error=str(exc))
            else:
                try:
                    again = (run_dir / "metadata.json").exists()
                    run(single, run_dir, resume=again, client=client, progress=progress)
                    entry.update(status="complete", error=None)
                except EngineUnavailable as exc:
                    entry.update(status="engine_failed", error=str(exc))
                except Interrupted:
                    entry.update(status="interrupted")
                    raise
                except ShlibError as exc:  # this engine cannot run the spec (no such runtime, ...): the others can
                    entry.update(status="failed", error=str(exc))
                finally:
                    client.close()
            if (run_dir / "metadata.json").exists():
                entry["run_id"] = read_campaign_run_id(run_dir)
            if progress and entry["status"] != "complete":
                tqdm.write(f"shlib: engine {target.label} {entry['status']}, skipped: {entry['error']}"[:1000])
            write_json(out / CAMPAIGN_FILE, campaign)
    finally:
        campaign["finished_at"] = datetime.now(UTC).isoformat()
        write_json(out / CAMPAIGN_FILE, campaign)
    if not any(e["status"] == "complete" for e in engines):
        raise EngineUnavailable(f"no engine of the campaign completed its run (see {out / CAMPAIGN_FILE}): "
                                + "; ".join(f"{e['label']}: {e['status']}" for e in engines))
    return out


def read_campaign_run_id(run_dir: Path) -> str | None:
    from shlib.results.store import read_metadata

    try:
        return read_metadata(run_dir).run_id
    except ResultsError:
        return None
