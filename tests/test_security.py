# ruff: noqa: F811  (pytest fixtures imported from reliability_helpers are redefined as arguments)
"""Security: probe containers are locked down (proved from inside a real probe container),
bad input never reaches a container, and ``shlib clean`` removes what shlib made and nothing else.

Against the real engine (marked ``docker``): skipped with the reason where none can be
reached, failed when CI=true.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from click.testing import CliRunner
from reliability_helpers import (  # noqa: F401  (fixtures)
    FX_OK,
    assert_no_containers,
    engine,
    fx_library,
    probe_image,
    write_spec,
)

from shlib.collect.docker_batch import ContainerBatch
from shlib.collect.engine import LABEL
from shlib.collect.library import MOUNT_POINT, ensure_volume, mount_kwargs

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

#: Runs inside a probe container: everything the lockdown promises, seen from inside.
INSPECT_JS = r"""
const fs = require('fs'), os = require('os'), net = require('net');
const out = {uid: process.getuid(), gid: process.getgid(), ifaces: Object.keys(os.networkInterfaces()),
             totalmem: os.totalmem()};
try { out.sys_net = fs.readdirSync('/sys/class/net'); } catch (e) { out.sys_net = 'ERR ' + e.code; }
const status = fs.readFileSync('/proc/self/status', 'utf8');
for (const k of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs']) {
  const m = status.match(new RegExp('^' + k + ':\\s*(\\S+)', 'm')); out[k] = m ? m[1] : null;
}
const tryWrite = (f) => { try { fs.writeFileSync(f, 'x'); return 'written'; } catch (e) { return e.code; } };
out.write_lib = tryWrite('/shlib/lib/shlib-escape');
out.write_lib_module = tryWrite('/shlib/lib/node_modules/shlib-fx-ok/index.js');
out.write_root = tryWrite('/etc/shlib-escape');
out.write_tmp = tryWrite('/tmp/shlib-escape');
for (const f of ['/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/pids/pids.max']) {
  try { out[f] = fs.readFileSync(f, 'utf8').trim(); } catch (e) { out[f] = 'ERR ' + e.code; }
}
out.mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.length)
  .map((l) => l.split(' ')).map((f) => ({point: f[4], opts: f[5]}));
out.lib_loads = require('/shlib/lib/node_modules/shlib-fx-ok').answer;
// Print, then stay a moment so that the host can read the container's cgroup.
const done = () => { console.log(JSON.stringify(out)); setTimeout(() => process.exit(0), 2000); };
const sock = net.connect({host: '1.1.1.1', port: 80});
sock.setTimeout(3000);
sock.on('connect', () => { out.connect = 'connected'; done(); });
sock.on('error', (e) => { out.connect = e.code; done(); });
sock.on('timeout', () => { out.connect = 'timeout'; done(); });
"""


def _pick_gvisor(client) -> str | None:
    from shlib.collect.runtimes import catalog

    known = catalog(client)
    names = [n for n, rt in known.items() if rt.kind == "gvisor" and rt.available]
    preferred = [n for n in names if "systrap" in n and "exclusive" not in n]
    return (preferred or names or [None])[0]


def _inspect(client, runtime: str | None, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run INSPECT_JS in a container made with the probe's create kwargs; (its report, HostConfig)."""
    kwargs = {**kwargs, "command": ["node", "-e", INSPECT_JS], "stdin_open": False}
    c = client.containers.create(**kwargs)
    host_cgroup: dict[str, str | None] = {}
    try:
        c.start()
        for key, rel in (("pids.max", "pids/docker/{}/pids.max"),
                         ("memory.limit_in_bytes", "memory/docker/{}/memory.limit_in_bytes")):
            path = Path("/sys/fs/cgroup") / rel.format(c.id)
            host_cgroup[key] = path.read_text().strip() if path.exists() else None
        c.wait(timeout=90)
        logs = c.logs(stdout=True, stderr=True).decode(errors="replace")
        c.reload()
        host_config = c.attrs["HostConfig"]
        mounts = c.attrs["Mounts"]
    finally:
        c.remove(force=True)
    line = next((ln for ln in logs.splitlines() if ln.startswith("{")), None)
    assert line, f"the inspection script printed no report under {runtime}: {logs[-2000:]}"
    return json.loads(line), {**host_config, "_mounts": mounts, "_host_cgroup": host_cgroup}


@pytest.fixture(scope="module")
def fx_volume(engine, fx_library, probe_image):  # noqa: F811
    return ensure_volume(engine, fx_library, probe_image)


@pytest.mark.parametrize("runtime_kind, mount", [("runc", "volume"), ("runc", "bind"), ("gvisor", "volume")])
def test_probe_container_is_locked_down_seen_from_inside(engine, fx_library, probe_image, fx_volume,  # noqa: F811
                                                         runtime_kind, mount):
    runtime = "runc" if runtime_kind == "runc" else _pick_gvisor(engine)
    if runtime is None:
        pytest.skip("no gVisor runtime is available on this host (see shlib doctor)")
    run_id = f"test-lockdown-{uuid.uuid4().hex[:8]}"
    batch = ContainerBatch(engine, timeout_s=60, memory_mb=256, pids_limit=64, labels={"shlib.run_id": run_id})
    kwargs = batch.create_kwargs(probe_image.tag, runtime, (FX_OK,), MOUNT_POINT,
                                 mount_kwargs(mount, fx_library, fx_volume), {"shlib.batch_id": "0"})
    report, hc = _inspect(engine, runtime, kwargs)
    print(runtime, mount, json.dumps({k: v for k, v in report.items() if k != "mounts"}), hc["_host_cgroup"])

    # What the engine was told (HostConfig) ...
    assert hc["Runtime"] == runtime
    assert hc["NetworkMode"] == "none"
    assert hc["ReadonlyRootfs"] is True
    assert hc["CapDrop"] == ["ALL"] and not hc.get("CapAdd")
    assert "no-new-privileges" in hc["SecurityOpt"]
    assert hc["PidsLimit"] == 64 and hc["Memory"] == 256 * 2**20
    assert hc["Privileged"] is False
    lib_mount = next(m for m in hc["_mounts"] if m["Destination"] == MOUNT_POINT)
    assert lib_mount["RW"] is False

    # ... and what the process sees.
    assert (report["uid"], report["gid"]) == (1000, 1000), report
    assert report["ifaces"] == ["lo"], report
    assert report["connect"] in {"ENETUNREACH", "EHOSTUNREACH", "EACCES", "ECONNREFUSED", "EPERM"}, report
    # Read-only, whatever the file permissions say: the mounts are ro (runc also fails the write
    # with EROFS; gVisor checks permissions first, so the non-root write fails with EACCES there).
    mounts = {m["point"]: m["opts"].split(",") for m in report["mounts"]}
    assert "ro" in mounts[MOUNT_POINT] and "ro" in mounts["/"], report["mounts"]
    assert report["write_lib"] in ({"EROFS"} if runtime_kind == "runc" else {"EROFS", "EACCES"}), report
    assert report["write_lib_module"] in {"EROFS", "EACCES"}, report
    assert report["write_root"] in {"EROFS", "EACCES"}, report
    if runtime_kind == "runc":
        assert report["write_tmp"] == "EROFS", report
    # gVisor mounts a tmpfs of its own at /tmp (in the sandbox's memory, inside the memory limit):
    # writable, but nothing reaches the host.
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert report[cap] in (None, "0000000000000000"), (cap, report)
    assert report["CapEff"] == "0000000000000000", report
    if report["NoNewPrivs"] is not None or runtime_kind == "runc":  # gVisor does not show the field
        assert report["NoNewPrivs"] == "1", report
    assert report["lib_loads"] == 42  # the library itself is readable
    # The limits, observed on the host (the container's cgroup, which holds a gVisor sandbox too) ...
    cgroup = hc["_host_cgroup"]
    if cgroup["pids.max"] is not None or runtime_kind == "runc":
        assert cgroup == {"pids.max": "64", "memory.limit_in_bytes": str(256 * 2**20)}, cgroup
    # ... and inside: runc shows the cgroup; gVisor sizes its sandbox's memory to the limit.
    if runtime_kind == "runc":
        assert report["/sys/fs/cgroup/memory/memory.limit_in_bytes"] == str(256 * 2**20), report
        assert report["/sys/fs/cgroup/pids/pids.max"] == "64", report
    else:
        assert report["totalmem"] <= 256 * 2**20 * 1.05, report
    assert_no_containers(engine, run_id)


# --- bad input never reaches a container ---------------------------------------------------------

class _CreateSpy:
    """Counts container creations through docker-py (high- and low-level) while installed."""

    def __init__(self, monkeypatch):
        self.calls: list[Any] = []
        from docker.api.container import ContainerApiMixin
        from docker.models.containers import ContainerCollection

        real_create, real_run = ContainerCollection.create, ContainerCollection.run
        real_low = ContainerApiMixin.create_container
        spy = self

        def create(self, *a, **kw):
            spy.calls.append(("create", a, kw))
            return real_create(self, *a, **kw)

        def run(self, *a, **kw):
            spy.calls.append(("run", a, kw))
            return real_run(self, *a, **kw)

        def low(self, *a, **kw):
            spy.calls.append(("create_container", a, kw))
            return real_low(self, *a, **kw)

        monkeypatch.setattr(ContainerCollection, "create", create)
        monkeypatch.setattr(ContainerCollection, "run", run)
        monkeypatch.setattr(ContainerApiMixin, "create_container", low)


@pytest.fixture
def create_spy(monkeypatch, engine):  # noqa: F811
    return _CreateSpy(monkeypatch)


@pytest.fixture(scope="module")
def read_only_dir(tmp_path_factory):
    """A directory nobody can write, not even root (a read-only tmpfs)."""
    path = tmp_path_factory.mktemp("ro")
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def _other_run(tmp_path: Path) -> Path:
    from shlib.results.metadata import RunMetadata
    from shlib.results.store import ResultsStore
    from shlib.spec.spec import make_spec

    out = tmp_path / "other-run"
    spec = make_spec({"name": "other", "runtimes": ["runc"], "modules": [FX_OK], "seed": 7})
    ResultsStore(out).write_metadata(RunMetadata(run_id="20200101T000000-other-beef", spec=spec.as_dict(),
                                                 runtime_set=["runc"]))
    return out


BAD_INPUTS = [
    # (id, CLI args (SPEC = a valid spec file), text the message must hold)
    ("unknown-runtime", ["SPEC", "--set", "runtimes=[no-such-runtime]"],
     "runtimes: unknown runtime(s) 'no-such-runtime'; known here: native"),
    ("unavailable-runtime", ["SPEC", "--set", "runtimes=[runsc-20240729-kvm]"],
     "runtimes: not available on this host: runsc-20240729-kvm (hangs"),
    ("shell-metachar-module", ["SPEC", "--set", "modules=['lodash; rm -rf /']"],
     "modules: 'lodash; rm -rf /' is not a valid npm package spec"),
    ("subshell-module", ["SPEC", "--set", "modules=['$(touch /tmp/pwned)']"], "is not a valid npm package spec"),
    ("traversal-module", ["SPEC", "--set", "modules=['../../etc/passwd']"], "no '..'"),
    ("scoped-traversal", ["SPEC", "--set", "modules=['@x/..']"], "is not a valid npm package spec"),
    ("empty-module", ["SPEC", "--set", "modules=['']"], "modules: a module must be a non-empty spec"),
    ("py-marker", ["SPEC", "--set", "modules=['py:numpy; rm -rf /']"], "environment markers"),
    ("py-path", ["SPEC", "--set", "modules=['py:../x']"], "paths are not allowed"),
    ("py-url", ["SPEC", "--set", "modules=['py:https://example.org/x.whl']"], "URLs and direct references"),
    ("py-vcs", ["SPEC", "--set", "modules=['py:-e git+https://github.com/a/b']"], "editable and VCS"),
    ("py-pip-option", ["SPEC", "--set", "modules=['py:--index-url https://example.org numpy']"], "pip options"),
    ("absurd-module", ["SPEC", "--set", f"modules=[{'a' * 5000}]"], "modules: module spec is 5000 characters"),
    ("negative-concurrency", ["SPEC", "--set", "concurrency=[-2]"],
     "concurrency: -2 is not allowed: each level is a whole number from 1 to 256"),
    ("huge-concurrency", ["SPEC", "--set", "concurrency=[100000]"], "from 1 to 256"),
    ("negative-repetitions", ["SPEC", "--set", "repetitions=-1"], "repetitions: Input should be greater than or"),
    ("huge-repetitions", ["SPEC", "--set", "repetitions=1000000000"], "repetitions: Input should be less than or"),
    ("unknown-field", ["SPEC", "--set", "concurency=4"], "concurency: unknown field; allowed fields:"),
    ("malformed-yaml", ["BADYAML"], "is not valid YAML"),
    ("missing-spec-file", ["/nonexistent/spec.yaml"], "does not exist"),
    ("not-writable-out", ["SPEC", "--out", "RO/run"], "is not writable"),
    ("other-run-in-out", ["SPEC", "--out", "OTHER"], "already holds run 20200101T000000-other-beef"),
    ("other-run-resume", ["SPEC", "--out", "OTHER", "--resume"], "of a different spec"),
    ("not-a-run-dir", ["SPEC", "--out", "JUNK"], "is not empty and holds no shlib run"),
    ("out-is-a-file", ["SPEC", "--out", "FILE"], "is a file"),
    ("resume-nothing", ["SPEC", "--out", "EMPTY", "--resume"], "holds no run to resume"),
]


@pytest.mark.parametrize("case, args, expected", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_before_any_container(create_spy, tmp_path, read_only_dir, case, args, expected):
    from shlib.cli import cli

    spec = write_spec(tmp_path / "spec.yaml", name="bad-input", runtimes=["runc"], modules=[FX_OK],
                      concurrency=[1], repetitions=1, seed=1)
    (tmp_path / "bad.yaml").write_text("runtimes: [runc\nmodules: {lodash\n")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty").mkdir()
    subst = {"SPEC": str(spec), "BADYAML": str(tmp_path / "bad.yaml"), "RO/run": str(read_only_dir / "run"),
             "OTHER": str(_other_run(tmp_path)), "JUNK": str(tmp_path / "junk"), "FILE": str(tmp_path / "a-file"),
             "EMPTY": str(tmp_path / "empty")}
    argv = ["run", *[subst.get(a, a) for a in args]]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert expected in result.output, result.output
    assert create_spy.calls == [], f"{case}: a container was created: {create_spy.calls[:1]}"
    assert not Path("/tmp/pwned").exists()
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"  # a directory that is not a run is untouched


# --- shlib clean ---------------------------------------------------------------------------------

def _tiny_image(client, tag: str, labels: dict[str, str]) -> str:
    """An image made offline (docker import), with ``labels`` only (not derived from shlib's image)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    repo, name = tag.split(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=name,
                                      changes=[f"LABEL {k}={v}" for k, v in labels.items()])
    return client.images.get(tag).id


class _Scoped:
    """A client whose list() calls see only objects that also carry ``label`` (so clean_all, run
    for real, cannot touch the images and volumes other tests and users are working with)."""

    class _Collection:
        def __init__(self, coll, label):
            self._coll, self._label = coll, label

        def list(self, **kwargs):
            filters = dict(kwargs.pop("filters", None) or {})
            labels = filters.get("label", [])
            filters["label"] = ([labels] if isinstance(labels, str) else list(labels)) + [self._label]
            return self._coll.list(filters=filters, **kwargs)

        def __getattr__(self, name):
            return getattr(self._coll, name)

    def __init__(self, client, label):
        self.containers = self._Collection(client.containers, label)
        self.volumes = self._Collection(client.volumes, label)
        self.images = self._Collection(client.images, label)
        self.api = client.api


def test_clean_removes_what_shlib_made_and_nothing_else(engine):  # noqa: F811
    from shlib.collect.cleanup import clean_all

    token = uuid.uuid4().hex[:10]
    run_id = f"test-clean-{token}"
    mine = {"shlib.test": token}
    made: dict[str, list[str]] = {"containers": [], "volumes": [], "images": []}
    try:
        plain_image = _tiny_image(engine, f"shlib-test-plain:{token}", {"shlib.test": token})
        labelled_image = _tiny_image(engine, f"shlib-test-labelled:{token}", {LABEL: "true", **mine})
        made["images"] += [plain_image, labelled_image]
        plain_c = engine.containers.create(plain_image, ["/hello"], labels=mine, network_mode="none")
        run_c = engine.containers.create(plain_image, ["/hello"], network_mode="none",
                                         labels={LABEL: "true", "shlib.run_id": run_id, **mine})
        other_run_c = engine.containers.create(plain_image, ["/hello"], network_mode="none",
                                               labels={LABEL: "true", "shlib.run_id": run_id + "-other", **mine})
        made["containers"] += [plain_c.id, run_c.id, other_run_c.id]
        plain_v = engine.volumes.create(f"shlib-test-plain-{token}", labels=mine)
        labelled_v = engine.volumes.create(f"shlib-test-labelled-{token}", labels={LABEL: "true", **mine})
        made["volumes"] += [plain_v.name, labelled_v.name]

        # 1. One run's containers only (what the runner does on --resume).
        removed = clean_all(engine, run_id=run_id)
        assert removed["containers"] == [run_c.name] and not removed["volumes"] and not removed["images"]
        ids = {c.id for c in engine.containers.list(all=True, filters={"label": f"shlib.test={token}"})}
        assert ids == {plain_c.id, other_run_c.id}

        # 2. Everything by label, as the real `shlib clean --dry-run` sees the engine: ours listed,
        #    the unlabelled ones not.
        preview = clean_all(engine, dry_run=True)
        assert other_run_c.name in preview["containers"] and plain_c.name not in preview["containers"]
        assert labelled_v.name in preview["volumes"] and plain_v.name not in preview["volumes"]
        assert f"shlib-test-labelled:{token}" in preview["images"]
        assert f"shlib-test-plain:{token}" not in preview["images"]
        assert all(v.startswith("shlib-lib-") or v.startswith("shlib-test-labelled-") for v in preview["volumes"])

        # 3. The removal itself, for real, scoped to this test's objects.
        removed = clean_all(_Scoped(engine, f"shlib.test={token}"))
        assert removed["containers"] == [other_run_c.name]
        assert removed["volumes"] == [labelled_v.name]
        assert removed["images"] == [f"shlib-test-labelled:{token}"]
        assert {c.id for c in engine.containers.list(all=True, filters={"label": f"shlib.test={token}"})} == {
            plain_c.id}
        assert {v.name for v in engine.volumes.list(filters={"label": f"shlib.test={token}"})} == {plain_v.name}
        assert {i.id for i in engine.images.list(filters={"label": f"shlib.test={token}"})} == {plain_image}
    finally:
        for cid in made["containers"]:
            try:
                engine.containers.get(cid).remove(force=True)
            except docker.errors.NotFound:
                pass
        for name in made["volumes"]:
            try:
                engine.volumes.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
        for iid in made["images"]:
            try:
                engine.images.remove(iid, force=True)
            except docker.errors.ImageNotFound:
                pass
