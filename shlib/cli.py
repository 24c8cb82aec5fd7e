"""The ``shlib`` command: doctor, setup, run, analyze, report, clean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from shlib.analysis.defaults import DEFAULT_BASELINE, DEFAULT_SEED
from shlib.errors import Interrupted, ShlibError


def _fail(exc: ShlibError, code: int = 2) -> None:
    click.echo(f"shlib: {exc}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shlib")
def cli() -> None:
    """Measure how fast container runtimes load a shared npm library volume."""


ENGINE_HELP = ("The engine: unix:///PATH, tcp://HOST:PORT (TLS from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH), "
               "ssh://[USER@]HOST[:PORT] or a docker context name (default: DOCKER_HOST, else the local socket).")


def doctor_report(refresh: bool = False, recheck: bool | None = None, engine_name: str | None = None
                  ) -> dict[str, Any]:
    """Engine, runtimes (available or why not) and host facts, as a dict.

    Every runtime is smoke-tested (cached per binary and flags); ``refresh`` (old name: ``recheck``)
    tests them all again. ``engine_name``: as ``--engine``; a malformed one raises EngineUnavailable.
    For an engine on another host, the host facts are that host's (engine info and a small container).
    """
    refresh = refresh or bool(recheck)
    from shlib.collect.engine import client_kind, connect, container_quirks, engine_facts, resolve_engine
    from shlib.collect.host import engine_host_facts, host_facts, kvm_facts
    from shlib.collect.runtimes import catalog
    from shlib.errors import EngineUnavailable, ShlibError

    target = resolve_engine(engine_name)  # a malformed name is the caller's error, not an unreachable engine
    try:
        client = connect(engine=target)
        engine: dict[str, Any] = {"reachable": True, **engine_facts(client)}
    except EngineUnavailable as exc:
        if engine_name:
            raise
        client, engine = None, {"reachable": False, "error": str(exc)}
    local = client is None or engine["local"]
    host, kvm = (host_facts(), kvm_facts()) if local else ({}, {})
    if not local:
        from shlib.collect.image import ensure_image

        try:
            image = ensure_image(client, "host").tag
            host = engine_host_facts(client, image, container_quirks(client_kind(client)))
        except ShlibError as exc:
            host = {"facts_error": str(exc)}
        kvm = {"dev_kvm": host.get("kvm"), "kvm_pvm_module": None,
               "hw_virt_flags": (host.get("container_view") or {}).get("hw_virt_flags", []), "kind": "unknown",
               "problem": "", "summary": ""}
    engine["native"] = ("available: shlib runs on the engine's host" if local else
                        "not available: shlib does not run on the engine's host")
    from shlib.analysis.variants import describe_variants

    runtimes = catalog(client, refresh=refresh)
    described = {n: r.as_dict() for n, r in runtimes.items()}
    variants = describe_variants(described, list(described))
    switch_columns = ["gvisor_build", "platform", "directfs", "file_access_mounts", "overlay2", "dcache"]
    for row in variants.to_dict("records"):
        if row["kind"] == "gvisor":  # the switches the variant runs with, its build's defaults filled in
            described[row["runtime"]]["switches"] = {c: row[c] for c in switch_columns}
    return {"engine": engine, "runtimes": described, "host": host, "virtualisation": kvm}


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--refresh", "--recheck", "refresh", is_flag=True,
              help="Smoke-test every runtime again instead of using cached results (--recheck: the old name).")
@click.option("--engine", "engine_name", metavar="URL|CONTEXT", help=ENGINE_HELP)
def doctor(as_json: bool, refresh: bool, engine_name: str | None = None) -> None:
    """What this host can measure: engine, every runtime (available or why not), host facts.

    A runtime is available once a trivial container under it started and exited in time (native:
    node -e 0); verdicts are cached per binary version and flags until --refresh.
    """
    try:
        report = doctor_report(refresh, engine_name=engine_name)
    except ShlibError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    engine = report["engine"]
    if engine["reachable"]:
        click.echo(f"engine {engine['label']!r} at {engine['url']}: {engine['kind'].capitalize()} "
                   f"{engine['version']} on {engine['name']} (id {engine['id']}; containerd "
                   f"{engine['containerd_version']}, {engine['storage_driver']}, cgroup v{engine['cgroup_version']})")
        click.echo(f"  native: {engine['native']}")
    else:
        click.echo(f"engine: NOT reachable: {engine['error']}")
    click.echo("runtimes:")
    for name, rt in report["runtimes"].items():
        mark = "ok " if rt["available"] else "-- "
        detail = " ".join(x for x in (rt["version"] or "", " ".join(rt["args"])) if x)
        click.echo(f"  {mark}{name:36s} {rt['kind']:7s} {detail}")
        if not rt["available"]:
            click.echo(f"       unavailable: {rt['reason']}")
            if rt.get("smoke_checked_at"):
                click.echo(f"       smoke-tested {rt['smoke_checked_at']} "
                           "(cached; 'shlib doctor --refresh' tests again)")
            if rt["hint"]:
                click.echo(f"       to install: {rt['hint']}")
    host = report["host"]
    whose = "" if engine.get("local", True) else " (the engine's)"
    click.echo(f"host{whose}: "
               f"{host.get('cpu_model')}, {host.get('cpu_count')} cores, "
               f"{(host.get('mem_total_bytes') or 0) / 2**30:.1f} GiB, kernel {host.get('kernel')}, "
               f"cgroups {host.get('cgroup_layout')}")
    if host.get("facts_error"):
        click.echo(f"  {host['facts_error']}")
    kvm = report["virtualisation"]
    if not kvm.get("kind") or not engine.get("local", True):
        click.echo(f"virtualisation: /dev/kvm {'present' if kvm.get('dev_kvm') else 'absent'} in a container on the "
                   "engine's host (PVM detection needs shlib on that host)")
        return
    flags = ", ".join(kvm["hw_virt_flags"]) or "no vmx/svm"
    click.echo(f"virtualisation: /dev/kvm {'present' if kvm['dev_kvm'] else 'absent'}, {kvm['kind']} ({flags}"
               f"{', kvm_pvm module' if kvm['kvm_pvm_module'] else ''})")
    if kvm["problem"]:
        click.echo(f"  {kvm['problem']}")


@cli.command()
@click.option("--host/--no-host", "host_setup", default=False,
              help="Also run scripts/setup-host.sh (as root): engine, runtimes, dockerd.")
@click.option("--node", "nodes", multiple=True, default=["host"], show_default=True,
              help="Node source for the image: host, wheel:20|22|24, pull:<tag> (repeatable).")
@click.option("--modules", default="paper", show_default=True,
              help="Module set name or comma-separated module specs (npm, or py:NAME==VERSION) for the libraries.")
@click.option("--python/--no-python", "python_setup", default=True, show_default=True,
              help="Also prepare Python: the quick preset's py: modules (pip wheels), the Python image and volume.")
@click.option("--podman", "podman_setup", is_flag=True,
              help="Also run scripts/setup-podman.sh (as root): podman, its runtimes, its API service.")
@click.option("--engine", "engine_name", metavar="URL|CONTEXT", help=ENGINE_HELP)
def setup(host_setup: bool, nodes: tuple[str, ...], modules: str, python_setup: bool = True,
          podman_setup: bool = False, engine_name: str | None = None) -> None:
    """Build the Node image(s) and the shared-library volume (and optionally the host)."""
    from shlib.collect.engine import connect
    from shlib.collect.image import ensure_image
    from shlib.collect.library import ensure_volume, install_library
    from shlib.collect.pyimage import ensure_python_image
    from shlib.collect.pylibrary import install_python_library
    from shlib.spec.modules import parse_ref
    from shlib.spec.spec import make_spec, preset

    try:
        if host_setup:
            script = Path(__file__).resolve().parent.parent / "scripts" / "setup-host.sh"
            subprocess.run(["bash", str(script)], check=True)
        if podman_setup:
            script = Path(__file__).resolve().parent.parent / "scripts" / "setup-podman.sh"
            subprocess.run(["bash", str(script)], check=True)
        spec = make_spec({"node": list(nodes), "modules": modules if "," not in modules else modules.split(",")})
        client = connect(engine=engine_name)
        images = [ensure_image(client, source) for source in spec.node]
        for image in images:
            click.echo(f"image {image.tag} ({image.node_version}, {image.image_id[:19]})")
        refs = spec.module_refs()
        if "node" in spec.languages():
            library = install_library([r.requirement for r in refs if r.language == "node"])
            click.echo(f"library {library.path}: {library.manifest['files']} files, tree {library.tree_hash[:12]}")
            click.echo(f"volume {ensure_volume(client, library, images[0])}")
        py_modules = [m for m, r in zip(spec.modules, refs, strict=True) if r.language == "python"]
        if python_setup and not py_modules:
            py_modules = [m for m in preset("quick").modules if parse_ref(m).language == "python"]
        if py_modules:
            pylib = install_python_library(py_modules)
            py_image = ensure_python_image(client, "host", pylib.content)
            click.echo(f"image {py_image.tag} (Python {py_image.python_version}, {py_image.image_id[:19]})")
            click.echo(f"python library {pylib.path}: {pylib.manifest['files']} files, tree {pylib.tree_hash[:12]}")
            click.echo(f"volume {ensure_volume(client, pylib, py_image)}")
    except ShlibError as exc:
        _fail(exc)


@cli.command()
@click.argument("spec_file", required=False, type=click.Path(dir_okay=False))
@click.option("--preset", help="A named preset instead of a spec file (quick, paper, python, smoke, gvisor-settings).")
@click.option("--out", type=click.Path(file_okay=False), help="Results directory (default runs/<run_id>).")
@click.option("--resume", is_flag=True, help="Complete the run already in --out.")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=YAML",
              help="Override a spec field, e.g. --set repetitions=5 --set 'runtimes=[runc, native]'.")
@click.option("--target-ci", type=float, metavar="FRACTION",
              help="Adaptive mode: repeat each cell until ratios are known to +-FRACTION (e.g. 0.05); "
                   "sets target_rel_halfwidth.")
@click.option("--max-repetitions", type=int, metavar="N",
              help="Adaptive mode: at most N repetitions of a cell (sets repetitions, the maximum).")
@click.option("--engine", "engine_name", metavar="URL|CONTEXT", help=ENGINE_HELP)
def run(spec_file: str | None, preset: str | None, out: str | None, resume: bool, overrides: tuple[str, ...],
        target_ci: float | None = None, max_repetitions: int | None = None, engine_name: str | None = None) -> None:
    """Collect: run an experiment from SPEC_FILE or --preset into a results directory."""
    import yaml

    from shlib.collect.runner import run_experiment
    from shlib.errors import SpecError
    from shlib.results.store import read_metadata
    from shlib.spec.spec import load_spec, make_spec
    from shlib.spec.spec import preset as load_preset

    try:
        if resume and out is None:
            raise SpecError("--resume needs --out, the directory of the run to complete")
        extra: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise SpecError(f"--set {item!r}: write FIELD=VALUE")
            key, value = item.split("=", 1)
            extra[key] = yaml.safe_load(value)
        if target_ci is not None:
            extra["target_rel_halfwidth"] = target_ci
        if max_repetitions is not None:
            extra["repetitions"] = max_repetitions
        from shlib.results.store import CAMPAIGN_FILE

        campaign_resume = resume and out is not None and (Path(out) / CAMPAIGN_FILE).exists()
        if resume and spec_file is None and preset is None and campaign_resume:
            from shlib.results.store import read_campaign

            spec = make_spec(read_campaign(Path(out))["spec"])  # the campaign's own spec, unchanged
        elif resume and spec_file is None and preset is None:  # the run's own spec, unchanged
            changes = [*(f"--set {o}" for o in overrides), *(["--target-ci"] if target_ci is not None else []),
                       *(["--max-repetitions"] if max_repetitions is not None else [])]
            if changes:
                raise SpecError(f"--resume completes a run with the spec it started with; {', '.join(changes)} would "
                                "change it. Drop them, or start a new run with them (another --out)")
            spec = make_spec(read_metadata(Path(out)).spec)  # type: ignore[arg-type]
        elif (spec_file is None) == (preset is None):
            raise SpecError("give either a SPEC_FILE or --preset NAME (not both)")
        elif preset is not None:
            spec = load_preset(preset, **extra)
        else:
            spec = make_spec({**load_spec(spec_file).as_dict(), **extra})
        if engine_name is not None:  # malformed or unreachable: refused before anything starts (no --out made)
            from shlib.collect.engine import connect

            connect(engine=engine_name).close()
        if spec.engines and engine_name is None:
            from shlib.collect.campaign import run_campaign
            from shlib.results.store import read_campaign

            run_dir = run_campaign(spec, out, resume=resume)
            for entry in read_campaign(run_dir)["engines"]:
                click.echo(f"engine {entry['label']}: {entry['status']}" + (f" ({entry['error']})"[:300]
                                                                             if entry["error"] else ""))
        else:  # one engine: --engine, else the default (a spec's engines list is a campaign's)
            run_dir = run_experiment(spec.model_copy(update={"engines": None}), out, resume=resume, engine=engine_name)
    except Interrupted as exc:
        _fail(exc, 130)
    except ShlibError as exc:
        _fail(exc)
    click.echo(f"results: {run_dir}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False),
              help="Where tables and figures go (default RUN_DIR/analysis; required for several directories).")
@click.option("--baseline", default=DEFAULT_BASELINE, show_default=True, help="Runtime every other is compared with.")
@click.option("--seed", default=DEFAULT_SEED, show_default=True, help="Bootstrap seed.")
def analyze(run_dirs: tuple[str, ...], out: str | None, baseline: str, seed: int) -> None:
    """Summary and ratio tables (CSV) and figures from a results directory.

    Several directories (or a campaign directory) are merged: engine as a factor, ratios within each
    engine, an engine x runtime table (engines.csv) and figure.
    """
    from shlib.present.export import analyze_run

    try:
        given = [Path(d) for d in run_dirs]
        result = analyze_run(given if len(given) > 1 else given[0], Path(out) if out else None, baseline=baseline,
                             seed=seed)
    except ShlibError as exc:
        _fail(exc)
    for line in result.headline_lines:
        click.echo(line)
    click.echo(f"tables and figures: {result.out_dir}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), help="Report directory (default reports/<run_id>).")
@click.option("--baseline", default=DEFAULT_BASELINE, show_default=True, help="Runtime every other is compared with.")
def report(run_dir: str, out: str | None, baseline: str) -> None:
    """Execute the analysis notebooks on RUN_DIR with papermill and export HTML."""
    from shlib.present.report import build_report

    try:
        report_dir = build_report(Path(run_dir), Path(out) if out else None, baseline=baseline)
    except ShlibError as exc:
        _fail(exc)
    click.echo(f"report: {report_dir}")


@cli.command()
@click.option("--dry-run", is_flag=True, help="List what would be removed.")
@click.option("--keep-images", is_flag=True, help="Keep images (they take a moment to rebuild).")
@click.option("--engine", "engine_name", metavar="URL|CONTEXT", help=ENGINE_HELP)
def clean(dry_run: bool, keep_images: bool, engine_name: str | None = None) -> None:
    """Remove every container, volume and image shlib made (found by label), nothing else."""
    from shlib.collect.cleanup import clean_all
    from shlib.collect.engine import connect

    try:
        removed = clean_all(connect(engine=engine_name), dry_run=dry_run, images=not keep_images)
    except ShlibError as exc:
        _fail(exc)
    verb = "would remove" if dry_run else "removed"
    for kind, names in removed.items():
        click.echo(f"{verb} {len(names)} {kind}" + (f": {', '.join(names)}" if names else ""))


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()


if __name__ == "__main__":
    main()
