"""Naming engines, Podman's quirks, merged runs and campaigns: everything that needs no engine.

The tests against real engines (a second dockerd, Podman) are in test_engines_real.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shlib.collect.engine import (
    EngineTarget,
    check_url,
    connect,
    container_quirks,
    engine_kind,
    is_local,
    redact,
    resolve_engine,
)
from shlib.errors import EngineUnavailable, ResultsError, SpecError

#: What Podman 4.3.1 (Debian 12) answers to GET /version, trimmed (seen on this host kind).
PODMAN_VERSION = {
    "Platform": {"Name": "linux/amd64/debian-12"},
    "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}, {"Name": "Conmon", "Version": "conmon 2.1.6"},
                   {"Name": "OCI Runtime (crun)", "Version": "crun version 1.8.1"}],
    "Version": "4.3.1", "ApiVersion": "1.41",
}
DOCKER_VERSION = {"Platform": {"Name": ""}, "Version": "20.10.24+dfsg1", "ApiVersion": "1.41",
                  "Components": [{"Name": "Engine", "Version": "20.10.24+dfsg1"},
                                 {"Name": "containerd", "Version": "1.6.20"}, {"Name": "runc", "Version": "1.1.5"}]}


@pytest.mark.parametrize("url, why", [
    ("http://example.org:2375", "scheme 'http://' is not one of unix://, tcp://, ssh://"),
    ("ftp://host", "scheme"),
    ("tcp://:2375", "needs a host name"),
    ("tcp://example.org:99999", "port"),
    ("tcp://example.org:0", "port"),
    ("tcp://example.org:abc", "port"),
    ("tcp://example.org", "needs a port"),
    ("ssh://", "needs a host name"),
    ("unix://var/run/docker.sock", "absolute path"),
    ("tcp://example.org:2376/path", "no path"),
])
def test_malformed_engine_urls_are_refused_naming_the_option_and_the_forms(url, why):
    with pytest.raises(EngineUnavailable) as err:
        resolve_engine(url)
    message = str(err.value)
    assert message.startswith("--engine ") and why in message
    assert "unix:///" in message and "tcp://HOST:PORT" in message and "docker context" in message


def test_a_name_that_is_neither_url_nor_context_is_refused():
    with pytest.raises(EngineUnavailable, match="not a URL"):
        resolve_engine("no such/engine")


def test_credentials_never_reach_the_label():
    target = resolve_engine("ssh://alice:s3cret@build-7.example.org:2222")
    assert target.label == "ssh://build-7.example.org:2222"
    assert "s3cret" not in target.label and "alice" not in target.label
    assert target.base_url == "ssh://alice:s3cret@build-7.example.org:2222"  # what the client uses
    assert redact("tcp://u:p@[::1]:2376") == "tcp://[::1]:2376"
    with pytest.raises(EngineUnavailable) as err:
        check_url("tcp://u:secret@host:70000")
    assert "secret" not in str(err.value)


def test_default_engine_is_docker_host_or_the_local_socket():
    assert resolve_engine(None, {}).base_url == "unix:///var/run/docker.sock"
    target = resolve_engine(None, {"DOCKER_HOST": "unix:///run/other.sock"})
    assert (target.label, target.base_url, target.source) == ("default", "unix:///run/other.sock", "default")
    assert resolve_engine("default", {"DOCKER_HOST": "unix:///run/x.sock"}).base_url == "unix:///run/x.sock"


def _tls_files(tmp_path: Path) -> Path:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("not a real certificate\n")
    return tmp_path


def test_tcp_takes_tls_from_docker_tls_verify_and_cert_path(tmp_path):
    certs = _tls_files(tmp_path)
    env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs)}
    target = resolve_engine("tcp://engine.example.org:2376", env)
    assert target.tls and target.tls.verify is True and target.tls.ca_cert == str(certs / "ca.pem")
    assert target.tls.cert == (str(certs / "cert.pem"), str(certs / "key.pem"))
    assert resolve_engine("tcp://engine.example.org:2375", {}).tls is False


def test_a_docker_context_is_read_with_its_host_and_tls(tmp_path, monkeypatch):
    from docker.context import ContextAPI
    from docker.tls import TLSConfig

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    certs = _tls_files(tmp_path / "certs" if (tmp_path / "certs").mkdir() is None else tmp_path)
    ContextAPI.create_context("lab-a", host="unix:///run/lab-a.sock")
    ContextAPI.create_context("lab-tls", host="tcp://lab.example.org:2376", tls_cfg=TLSConfig(
        client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")), ca_cert=str(certs / "ca.pem"), verify=True))
    target = resolve_engine("lab-a")
    assert (target.label, target.base_url, target.source) == ("lab-a", "unix:///run/lab-a.sock", "context")
    tls_target = resolve_engine("lab-tls")
    assert tls_target.base_url == "tcp://lab.example.org:2376" and tls_target.tls
    with pytest.raises(EngineUnavailable, match=r"no docker context of that name \(known: .*lab-a"):
        resolve_engine("lab-b")


def test_an_unreachable_engine_is_named_with_the_option(tmp_path):
    with pytest.raises(EngineUnavailable) as err:
        connect(engine=f"unix://{tmp_path}/absent.sock")
    assert "--engine" in str(err.value) and "cannot reach the engine" in str(err.value)


def test_cli_refuses_bad_engines_before_anything_starts(tmp_path):
    out = tmp_path / "run"
    for engine, why in (("tcp://host:70000", "port"), (f"unix://{tmp_path}/absent.sock", "cannot reach")):
        done = subprocess.run([sys.executable, "-m", "shlib.cli", "run", "--preset", "smoke", "--engine", engine,
                               "--out", str(out)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "--engine" in done.stderr and why in done.stderr
        assert not (out / "metadata.json").exists()
    done = subprocess.run([sys.executable, "-m", "shlib.cli", "doctor", "--engine", "ftp://x"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "scheme" in done.stderr


def test_podman_is_told_from_docker_by_its_version_answer():
    assert engine_kind(PODMAN_VERSION) == "podman"
    assert engine_kind(DOCKER_VERSION) == "docker"
    ulimits = container_quirks("podman")["ulimits"]
    assert {(u["Name"], u["Soft"], u["Hard"]) for u in ulimits} == {("nofile", 1024, 1024), ("nproc", 1024, 1024)}
    assert container_quirks("docker") == {}


def test_podman_containers_get_the_ulimits_in_their_create_arguments():
    from shlib.collect.docker_batch import ContainerBatch

    batch = ContainerBatch(client=None, timeout_s=5, extra=container_quirks("podman"))  # type: ignore[arg-type]
    kwargs = batch.create_kwargs("img", "crun", ("lodash",), "/shlib/lib", {}, {})
    assert [u["Name"] for u in kwargs["ulimits"]] == ["nofile", "nproc"]
    assert kwargs["network_mode"] == "none" and kwargs["read_only"]
    plain = ContainerBatch(client=None, timeout_s=5).create_kwargs("img", "runc", ("lodash",), "/x", {}, {})
    assert "ulimits" not in plain


@pytest.mark.parametrize("url, name, expected", [
    ("unix:///EXISTING", "thishost", True),
    ("unix:///EXISTING", "otherhost", False),
    ("unix:///nonexistent/docker.sock", "thishost", False),
    ("tcp://127.0.0.1:2375", "thishost", True),
    ("tcp://localhost:2375", "thishost.example.org", True),
    ("tcp://10.1.2.3:2375", "thishost", False),
    ("ssh://thishost", "thishost", False),
    ("ssh://127.0.0.1", "thishost", True),
    ("ssh://127.0.0.1", None, False),
])
def test_local_means_this_hosts_name_and_a_way_that_does_not_leave_it(tmp_path, url, name, expected):
    sock = tmp_path / "docker.sock"
    sock.touch()
    target = EngineTarget("x", url.replace("/EXISTING", str(sock)))
    assert is_local(target, name, hostname="thishost") is expected


def test_runsc_wrapper_flags_are_read_for_the_catalog(tmp_path):
    from shlib.collect.runtimes import wrapper_args

    wrapper = tmp_path / "runsc-20240729-systrap"
    wrapper.write_text("#!/bin/sh\nexec '/opt/x/runsc' --network=none --platform=systrap \"$@\"\n")
    assert wrapper_args(str(wrapper)) == ["--network=none", "--platform=systrap"]
    assert wrapper_args("/bin/true") == [] and wrapper_args(None) == []


def test_remote_engines_refuse_bind_native_and_cold():
    from shlib.collect.runner import check_remote_spec
    from shlib.spec.spec import make_spec

    engine = {"label": "lab", "url": "ssh://lab", "name": "lab"}
    check_remote_spec(make_spec({"runtimes": ["runc"], "mount": ["volume", "image"]}), engine)
    for spec, field in (({"mount": ["bind"]}, "mount: 'bind'"), ({"cache": ["cold"]}, "cache: 'cold'"),
                        ({"runtimes": ["runc", "native"]}, "runtimes: 'native'")):
        with pytest.raises(SpecError, match=field):
            check_remote_spec(make_spec(spec), engine)


def test_spec_engines_are_checked():
    from shlib.spec.spec import make_spec

    assert make_spec({"engines": "unix:///x.sock"}).engines == ["unix:///x.sock"]
    for bad, why in (([], "at least one engine"), (["a", "a"], "twice"), ([""], "not an engine")):
        with pytest.raises(SpecError, match=why):
            make_spec({"engines": bad})
    assert "engines" not in make_spec({}).as_dict()  # a spec without engines keeps its shape


# --- merged runs -----------------------------------------------------------------------------------------

def _engine_run(tmp_path: Path, name: str, engine: str, engine_id: str, speeds: dict, modules: dict, seed: int,
                cores: int = 2, host: str | None = None) -> Path:
    from shlib.simulate import Scenario, simulate_results, write_results_dir

    frame = simulate_results(Scenario(speeds=speeds, modules=modules, trials_per_group=24, sigma=0.1, batch_sd=0.02,
                                      run_id=name), seed=seed)
    frame["engine"] = engine
    frame["engine_host"] = host or engine
    return write_results_dir(frame, tmp_path / name, {
        "engine": {"label": engine, "kind": "docker", "id": engine_id, "name": host or engine},
        "host": {"hostname": host or engine, "cpu_count": cores}, "spec": {"timeout_s": 60}})


def test_merged_runs_compare_within_each_engine_never_across(tmp_path):
    """Engine A: runsc 3x runc. Engine B: a machine 4x slower, runsc 1.5x runc. Pooled, the runsc rows of
    the slow machine would meet runc rows of the fast one: the within-engine answers must come out."""
    from shlib.analysis.analyze import analyze_runs
    from shlib.results.store import load_results

    a = _engine_run(tmp_path, "run-a", "engine-a", "ID-A", {"runc": 1.0, "runsc-sim": 3.0},
                    {"lodash": 40.0, "express": 80.0}, seed=1)
    b = _engine_run(tmp_path, "run-b", "engine-b", "ID-B", {"runc": 4.0, "runsc-sim": 6.0},
                    {"lodash": 40.0, "express": 80.0}, seed=2, cores=64)
    frame, metas = load_results([a, b])
    assert [m.run_id for m in metas] == ["run-a", "run-b"]
    assert set(frame["run_id"]) == {"run-a", "run-b"} and set(frame["engine"]) == {"engine-a", "engine-b"}
    result = analyze_runs(frame, metas, n_resamples=400)
    ratios = result.ratios[(result.ratios["statistic"] == "median") & (result.ratios["runtime"] == "runsc-sim")]
    assert "engine" in ratios.columns
    for engine, truth, other in (("engine-a", 3.0, 1.5), ("engine-b", 1.5, 3.0)):
        rows = ratios[ratios["engine"] == engine]
        assert len(rows) == 2  # one per module
        assert (rows["ci_low"] <= truth).all() and (rows["ci_high"] >= truth).all()
        assert ((rows["ci_high"] < other) | (rows["ci_low"] > other)).all()
    table = result.engines
    assert list(table["engine"]) == ["engine-a", "engine-b"] and set(table["n_engines"]) == {2}
    assert set(table["engine_kind"]) == {"docker"} and list(table["engine_host"]) == ["engine-a", "engine-b"]
    assert np.allclose(table["gmean_ratio"], [3.0, 1.5], rtol=0.1)
    assert set(result.replication["engine"].dropna()) <= {"engine-a", "engine-b"}
    # the pooled comparison (engine ignored) would give neither answer
    from shlib.analysis.ratios import ratios as pooled_ratios

    pooled = pooled_ratios(frame.drop(columns=["engine", "engine_host"]), n_resamples=200)
    pooled = pooled[(pooled["statistic"] == "median") & (pooled["runtime"] == "runsc-sim")]
    assert not np.allclose(pooled["ratio"], 3.0, rtol=0.1) and not np.allclose(pooled["ratio"], 1.5, rtol=0.1)


def test_batches_of_merged_runs_stay_apart_and_single_runs_load_as_before(tmp_path):
    from shlib.analysis.frames import prepare
    from shlib.results.metadata import RunMetadata
    from shlib.results.store import load_results

    a = _engine_run(tmp_path, "run-a", "same", "ID", {"runc": 1.0, "runsc-sim": 2.0}, {"lodash": 40.0}, seed=1)
    b = _engine_run(tmp_path, "run-b", "same", "ID", {"runc": 1.0, "runsc-sim": 2.0}, {"lodash": 40.0}, seed=2)
    frame, metas = load_results([a, b])
    work = prepare(frame)
    per_run = frame.groupby("run_id")["batch_id"].nunique().sum()
    assert work["cluster"].nunique() == per_run  # batch 0 of run a is not batch 0 of run b
    single, meta = load_results(a)
    assert isinstance(meta, RunMetadata) and set(single["run_id"]) == {"run-a"}
    with pytest.raises(ResultsError, match="given twice"):
        load_results([a, a])


def test_two_machines_both_called_default_become_two_engines(tmp_path):
    from shlib.results.store import load_results

    a = _engine_run(tmp_path, "run-a", "default", "ID-1", {"runc": 1.0}, {"lodash": 40.0}, seed=1, host="lab-1")
    b = _engine_run(tmp_path, "run-b", "default", "ID-2", {"runc": 1.0}, {"lodash": 40.0}, seed=2, host="lab-2")
    frame, metas = load_results([a, b])
    assert set(frame["engine"]) == {"default@lab-1", "default@lab-2"}
    assert metas[0].engine["label_recorded"] == "default"


def test_one_engine_says_so_in_the_engines_table(tmp_path):
    from shlib.analysis.analyze import analyze_runs
    from shlib.results.store import load_results

    a = _engine_run(tmp_path, "run-a", "only", "ID", {"runc": 1.0, "runsc-sim": 2.0}, {"lodash": 40.0}, seed=1)
    frame, metas = load_results([a])
    result = analyze_runs(frame, metas, n_resamples=200)
    assert list(result.engines["engine"]) == ["only"] and set(result.engines["n_engines"]) == {1}


# --- campaigns ---------------------------------------------------------------------------------------------

def test_a_campaign_records_an_unreachable_and_a_lost_engine_and_keeps_the_rest(tmp_path, monkeypatch):
    """The run function is replaced (no engine here); connect() to the first two succeeds, to the third not."""
    import shlib.collect.campaign as campaign
    from shlib.results.store import read_campaign, run_dirs

    reachable = {"unix:///run/a.sock", "unix:///run/b.sock"}

    class Client:
        def close(self) -> None:
            pass

    def fake_connect(pool_size: int, timeout_s: float, engine: EngineTarget) -> Client:
        if engine.base_url not in reachable:
            raise EngineUnavailable(f"--engine {engine.label!r}: cannot reach the engine")
        return Client()

    def fake_run(spec, run_dir, resume, client, progress):
        run_dir = Path(run_dir)
        name = "a" if "a.sock" in str(run_dir) else "b"
        _engine_run(run_dir.parent, run_dir.name, f"engine-{name}", f"ID-{name}", {"runc": 1.0}, {"lodash": 40.0},
                    seed=3)
        assert spec.engines is None and spec.seed == 77  # one seed for every engine
        if name == "b":
            raise EngineUnavailable("the Docker engine stopped answering during a batch")
        return run_dir

    monkeypatch.setattr(campaign, "connect", fake_connect)
    spec = {"name": "c", "runtimes": ["runc"], "seed": 77,
            "engines": ["unix:///run/a.sock", "unix:///run/b.sock", "unix:///run/c.sock"]}
    out = campaign.run_campaign(spec, tmp_path / "camp", run=fake_run, progress=False)
    record = read_campaign(out)
    status = {e["label"]: e["status"] for e in record["engines"]}
    assert status == {"unix:///run/a.sock": "complete", "unix:///run/b.sock": "engine_failed",
                      "unix:///run/c.sock": "unreachable"}
    assert "stopped answering" in record["engines"][1]["error"]
    assert [d.name for d in run_dirs([out])] == ["01-unix-run-a.sock", "02-unix-run-b.sock"]  # b kept its rows
    assert json.loads((out / "campaign.json").read_text())["finished_at"]


def test_a_campaign_refuses_malformed_engines_before_any_starts(tmp_path):
    from shlib.collect.campaign import run_campaign

    def never(*args, **kwargs):
        raise AssertionError("nothing may start")

    with pytest.raises(SpecError, match="port"):
        run_campaign({"engines": ["unix:///run/a.sock", "tcp://x:70000"]}, tmp_path / "c", run=never)
    with pytest.raises(SpecError, match="named twice"):
        run_campaign({"engines": ["ssh://a@h", "ssh://b@h"]}, tmp_path / "d", run=never)
    assert not (tmp_path / "c").exists()


# --- merged analysis on disk: the CLI and the across-engines notebook ---------------------------------------

def _two_engine_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = _engine_run(tmp_path, "run-a", "engine-a", "ID-A", {"runc": 1.0, "runsc-sim": 3.0}, {"lodash": 40.0}, seed=1)
    b = _engine_run(tmp_path, "run-b", "engine-b", "ID-B", {"runc": 4.0, "runsc-sim": 6.0}, {"lodash": 40.0}, seed=2)
    return a, b


def test_shlib_analyze_merges_directories_into_an_engine_table_and_figure(tmp_path):
    a, b = _two_engine_runs(tmp_path)
    cmd = [sys.executable, "-m", "shlib.cli", "analyze", str(a), str(b)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "give --out" in done.stderr
    done = subprocess.run([*cmd, "--out", str(tmp_path / "merged")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import pandas as pd

    engines = pd.read_csv(tmp_path / "merged" / "engines.csv")
    assert sorted(engines["engine"]) == ["engine-a", "engine-b"]
    assert (tmp_path / "merged" / "figures" / "engines.png").stat().st_size > 5000
    provenance = json.loads((tmp_path / "merged" / "analysis.json").read_text())
    assert [r["run_id"] for r in provenance["runs"]] == ["run-a", "run-b"]


def _reading(nb) -> str:
    cell = next(c for c in nb.cells if "engines-reading" in c.metadata.get("tags", []))
    return "".join(str(o.get("data", {}).get("text/markdown", "")) for o in cell.outputs)


def test_the_across_engines_notebook_compares_two_engines_and_says_one_engine_only_for_one(tmp_path, monkeypatch):
    from shlib.paths import repo_root
    from shlib.present import notebooks

    monkeypatch.setenv("PYTHONPATH", str(repo_root()))  # the kernel imports this checkout's shlib
    notebook = repo_root() / "notebooks" / "06-across-engines.ipynb"
    a, b = _two_engine_runs(tmp_path)
    kernel = notebooks.kernel_for_this_environment()
    nb = notebooks.execute(notebook, tmp_path / "two.ipynb",
                           {"run_dir": str(a), "more_run_dirs": [str(b)], "n_resamples": 200,
                            "figures_dir": str(tmp_path / "fig")}, kernel_name=kernel, timeout_s=600)
    text = _reading(nb)
    assert "**2 engines**" in text and "do not all overlap" in text
    assert re.search(r"engine-a (2\.[89]|3\.[01])\dx", text) and re.search(r"engine-b 1\.[45]\dx", text)
    assert (tmp_path / "fig" / "across_engines.png").exists()
    nb = notebooks.execute(notebook, tmp_path / "one.ipynb", {"run_dir": str(a), "n_resamples": 200},
                           kernel_name=kernel, timeout_s=600)
    assert "One engine only" in _reading(nb)


def test_podman_runtimes_are_served_one_socket_each(tmp_path):
    from shlib.collect.engine import client_for_runtime, podman_runtime_sockets
    from shlib.errors import RuntimeUnavailable

    main = tmp_path / "podman.sock"
    (tmp_path / "podman.sock.d").mkdir()
    for name in ("runc", "runsc-20240729-systrap"):
        (tmp_path / "podman.sock.d" / f"{name}.sock").touch()
    target = EngineTarget("p", f"unix://{main}")
    assert podman_runtime_sockets(target) == {
        "runc": f"unix://{main}.d/runc.sock", "runsc-20240729-systrap": f"unix://{main}.d/runsc-20240729-systrap.sock"}
    assert podman_runtime_sockets(EngineTarget("r", "ssh://lab")) == {}

    class Podman:
        shlib_target, shlib_kind, shlib_default_runtime = target, "podman", "crun"

    client = Podman()
    assert client_for_runtime(client, "crun") is client and client_for_runtime(client, None) is client
    with pytest.raises(RuntimeUnavailable, match=r"cannot choose the runtime per container.*podman.sock.d/kata.sock"):
        client_for_runtime(client, "kata")


def test_an_engine_elsewhere_gives_its_own_host_facts(tmp_path):
    from shlib.collect.host import engine_host_facts

    class Containers:
        def __init__(self):
            self.asked = {}

        def run(self, image, command, **kwargs):
            self.asked = {"image": image, **kwargs}
            return (json.dumps({"cpu_model": "Intel Xeon Gold 6338", "cpu_count": 64, "mem_total_bytes": 2**38,
                                "kernel": "6.1.0", "cgroup_layout": "v2", "hw_virt_flags": ["vmx"],
                                "dev_kvm": True}) + "\n").encode()

    class Remote:
        containers = Containers()

        def info(self):
            return {"Name": "lab-7", "KernelVersion": "6.1.0-18-amd64", "OperatingSystem": "Debian GNU/Linux 12",
                    "NCPU": 64, "MemTotal": 2**38, "CgroupVersion": "2"}

    remote = Remote()
    facts = engine_host_facts(remote, "shlib/node:x", {"ulimits": ["u"]})
    assert facts["hostname"] == "lab-7" and facts["cpu_count"] == 64 and facts["cpu_model"] == "Intel Xeon Gold 6338"
    assert facts["cgroup_layout"] == "v2" and facts["kvm"] is True and facts["source"] == "engine"
    assert remote.containers.asked["network_mode"] == "none" and remote.containers.asked["remove"] is True
    assert remote.containers.asked["ulimits"] == ["u"]

    def broken(*args, **kwargs):
        raise RuntimeError("no such image")

    remote.containers.run = broken  # type: ignore[method-assign]
    facts = engine_host_facts(remote, "shlib/node:x")
    assert facts["cpu_count"] == 64 and "no such image" in facts["facts_error"]


def test_a_campaign_resumes_only_what_is_not_complete(tmp_path, monkeypatch):
    import shlib.collect.campaign as campaign
    from shlib.results.store import read_campaign

    calls: list[tuple[str, bool]] = []
    fail = {"b"}

    class Client:
        def close(self) -> None:
            pass

    def fake_run(spec, run_dir, resume, client, progress):
        name = "a" if "a.sock" in str(run_dir) else "b"
        calls.append((name, resume))
        _engine_run(Path(run_dir).parent, Path(run_dir).name, f"e-{name}", name, {"runc": 1.0}, {"lodash": 40.0},
                    seed=1) if not resume else None
        if name in fail:
            raise EngineUnavailable("gone")
        return run_dir

    monkeypatch.setattr(campaign, "connect", lambda **kwargs: Client())
    spec = {"runtimes": ["runc"], "engines": ["unix:///run/a.sock", "unix:///run/b.sock"]}
    out = campaign.run_campaign(spec, tmp_path / "c", run=fake_run, progress=False)
    with pytest.raises(ResultsError, match="--resume"):
        campaign.run_campaign(spec, out, run=fake_run, progress=False)
    fail.clear()
    campaign.run_campaign(spec, out, resume=True, run=fake_run, progress=False)
    assert calls == [("a", False), ("b", False), ("b", True)]  # a was complete: not run again; b resumed
    assert {e["status"] for e in read_campaign(out)["engines"]} == {"complete"}


def test_the_catalog_of_an_engine_elsewhere_reads_nothing_of_this_host(monkeypatch, tmp_path):
    """native is unavailable, no local binary is asked its version, smoke verdicts are keyed by the engine."""
    from shlib.collect import runtimes

    monkeypatch.setenv("SHLIB_CACHE", str(tmp_path / "cache"))
    asked: list[str | None] = []
    monkeypatch.setattr(runtimes, "binary_version", lambda path: asked.append(path) or "local-version")
    monkeypatch.setattr(runtimes, "smoke_container", lambda client, name, timeout_s: "")
    monkeypatch.setattr(runtimes, "kvm_facts", lambda: pytest.fail("KVM of this host read for a remote engine"))

    class Remote:
        shlib_target = EngineTarget("lab", "ssh://lab-7")
        shlib_kind = "docker"

        def info(self):
            return {"Name": "lab-7", "ID": "LAB7", "Runtimes": {"runc": {"path": "runc"},
                                                                  "runsc": {"path": "/usr/bin/runsc"}}}

        def version(self):
            return {"Components": [{"Name": "runc", "Version": "1.1.12"}]}

    cat = runtimes.catalog(Remote())
    assert not cat["native"].available and "does not run on the engine's host" in cat["native"].reason
    assert cat["runc"].available and cat["runc"].version == "1.1.12"  # from the engine's own answer
    assert cat["runsc"].available and cat["runsc"].version is None
    assert asked == [runtimes.shutil.which("node")]  # only native's node, never the engine's binaries
    cache = json.loads((tmp_path / "cache" / "runtime-smoke.json").read_text())
    assert all(key.endswith("|remote:LAB7") for key in cache)


def test_the_public_api_names_resolve():
    import shlib

    for name in shlib.__all__:
        assert getattr(shlib, name) is not None, name
