"""Python beside Node: spec syntax, hostile requirements, the Python probe, library and image, real runs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from importlib import resources
from pathlib import Path
from unittest import mock

import pytest
from helpers import assert_run_left_nothing

from shlib.collect import runner
from shlib.collect.docker_batch import ContainerBatch
from shlib.collect.pyimage import PY_FLAGS, PY_MOUNT_POINT, PY_PROBE_PATH, find_interpreter, python_command, rootfs_tar
from shlib.collect.pylibrary import import_name, install_python_library
from shlib.errors import SpecError
from shlib.results.store import load_results
from shlib.spec.modules import MODULE_SETS, parse_ref
from shlib.spec.plan import cells
from shlib.spec.spec import make_spec, preset

PYFIXTURES = Path(__file__).resolve().parent / "pyfixtures"
FX_OK, FX_RAISES = "shlib-fx-pyok", "shlib-fx-pyraises"


@pytest.fixture(scope="module")
def fx_pylibrary(tmp_path_factory):
    return install_python_library([], root=tmp_path_factory.mktemp("pylibs"),
                                  local={FX_OK: PYFIXTURES / "shlib_fx_pyok",
                                         FX_RAISES: PYFIXTURES / "shlib_fx_pyraises"})


@pytest.mark.parametrize("hostile, why", [
    ("numpy; rm -rf /", "environment markers and anything after ';' are not allowed"),
    ("../x", "paths are not allowed"),
    ("https://example.org/numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.whl", "URLs and direct references"),
    ("numpy @ https://example.org/numpy.whl", "URLs and direct references"),
    ("-e git+https://github.com/numpy/numpy#egg=numpy", "editable and VCS requirements"),
    ("git+https://github.com/numpy/numpy", "editable and VCS requirements"),
    ("--index-url https://example.org/simple numpy", "pip options"),
    ("-r requirements.txt", "pip options"),
    ("numpy>=2", "only an exact pin"),
    ("numpy[dev]==2.1.3", "extras"),
    ("numpy==2.1.3 && reboot", "shell metacharacters"),
    ("$(reboot)", "shell metacharacters"),
    ("json", "standard library module"),
])
def test_hostile_python_requirements_are_refused_before_anything_runs(hostile, why):
    """Refused by the spec, naming the field and what is allowed: the engine is never asked for anything."""
    never = mock.Mock(side_effect=AssertionError("the engine was used"))
    with mock.patch.object(runner, "connect", never), mock.patch.object(runner, "install_python_library", never), \
            pytest.raises(SpecError) as err:
        runner.run_experiment({"runtimes": ["runc"], "modules": [f"py:{hostile}"]}, progress=False)
    message = str(err.value)
    assert message.startswith("invalid experiment spec:\n  modules:") and why in message, message
    if why != "standard library module":
        assert "optionally pinned exactly with ==VERSION" in message  # what is allowed


def test_module_specs_name_their_ecosystem():
    assert parse_ref("py:numpy==2.1.3") == parse_ref("py:NumPy==2.1.3")
    assert parse_ref("py:PyYAML").name == "pyyaml" and parse_ref("py:PyYAML").version is None
    assert parse_ref("npm:lodash@4.17.20") == parse_ref("lodash@4.17.20")
    assert parse_ref("npm:lodash@4.17.20").language == "node" and parse_ref("py:flask").language == "python"
    assert parse_ref("py:numpy==2.1.3").requirement == "numpy==2.1.3"
    assert parse_ref("lodash@4.17.20").requirement == "lodash@4.17.20"
    with pytest.raises(ValueError, match="looks like a Python requirement: write it 'py:numpy==2.1.3'"):
        parse_ref("numpy==2.1.3")
    with pytest.raises(ValueError, match="unknown ecosystem 'pip'"):
        parse_ref("pip:numpy")
    # the same name in both ecosystems is two modules; twice in one is refused
    assert make_spec({"modules": ["py:requests", "npm:requests"]}).languages() == ["node", "python"]
    with pytest.raises(SpecError, match="a module is listed twice"):
        make_spec({"modules": ["py:PyYAML", "py:pyyaml"]})


def test_a_mixed_spec_plans_cells_per_language_with_their_own_interpreter():
    spec = make_spec({"runtimes": ["native", "runc"], "modules": ["lodash@4.17.20", "py:requests==2.32.3"],
                      "concurrency": [1, 2], "seed": 1})
    got = cells(spec, ["native", "runc"])
    assert {(c.language, c.node) for c in got} == {("node", "host"), ("python", "python:host")}
    assert all(parse_ref(m).language == c.language for c in got for m in c.modules)
    assert len(got) == 2 * 2 * 2
    seq = make_spec({**spec.as_dict(), "load_mode": "sequence", "modules": ["lodash", "py:flask", "react"]})
    units = {c.modules for c in cells(seq, ["runc"])}
    assert units == {("lodash", "react"), ("py:flask",)}  # one process never mixes two interpreters
    with pytest.raises(SpecError, match="python: 'wheel:22' is not a python source"):
        make_spec({"python": ["wheel:22"]})
    two = make_spec({**spec.as_dict(), "python": ["host", "debian:trixie"]})
    assert {c.node for c in cells(two, ["runc"]) if c.language == "python"} == {"python:host", "python:debian:trixie"}


def test_presets_and_sets():
    assert all(parse_ref(m).language == "python" and parse_ref(m).version for m in MODULE_SETS["sock"])
    assert {"numpy", "requests", "flask", "pandas", "boto3", "django", "scipy"} <= {
        parse_ref(m).name for m in MODULE_SETS["sock"]}
    py = preset("python")
    assert set(py.runtimes) == {"native", "runc", "runsc-20221219-ptrace", "runsc-20240729-systrap"}
    assert {"numpy", "requests", "flask"} <= set(py.module_names()) and py.concurrency == [1, 4]
    assert py.languages() == ["node", "python"]  # both in one run: the penalty per language, same conditions
    assert py.python == ["host", "debian:trixie"]  # two interpreter versions
    quick = preset("quick")
    assert quick.languages() == ["node", "python"]


def test_import_names_come_from_the_distribution():
    dist = mock.Mock()
    dist.read_text.return_value = "_yaml\nyaml\n"
    assert import_name(dist, "pyyaml") == "yaml"
    dist.read_text.return_value = "sklearn\n"
    assert import_name(dist, "scikit-learn") == "sklearn"
    dist.read_text.return_value = "jinja2\n"
    assert import_name(dist, "jinja2") == "jinja2"


def _probe(lib: Path, modules: list[str], hold: bool = False) -> dict:
    interp = find_interpreter("host")
    with resources.as_file(resources.files("shlib.collect.probes").joinpath("load.py")) as probe:
        arg = json.dumps({"lib": str(lib), "modules": modules, "barrier": True, "hold": hold})
        done = subprocess.run([interp.executable, *PY_FLAGS, str(probe), arg], input=b"go 0\n", capture_output=True,
                              timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "ready"
    return json.loads(lines[1])


def test_the_python_probe_reports_each_import_and_the_protocol_fields(fx_pylibrary):
    out = _probe(fx_pylibrary.content, ["shlib_fx_pyok", "shlib_fx_pyraises", "no_such_module"], hold=True)
    ok, bad, missing = out["results"]
    assert ok["ok"] and ok["load_ms"] > 0 and ok["files"] == 2  # the package and its subpackage
    assert not bad["ok"] and bad["error"] == "RuntimeError: shlib-fx-pyraises fails on import"
    assert missing["error"].startswith("ModuleNotFoundError")
    for key in ("boot_ms", "ready_wall_ms", "go_recv_wall_ms", "go_wall_ms", "loaded_wall_ms", "process_start_wall_ms",
                "proc_cpu_ms", "rss_bytes"):
        assert isinstance(out[key], (int, float)), key
    assert out["process_start_wall_ms"] <= out["ready_wall_ms"] <= out["go_wall_ms"] <= out["loaded_wall_ms"]
    assert 0 < out["boot_ms"] < 5000 and out["rss_bytes"] > 1e6
    assert out["bytecode"] == {"dont_write_bytecode": True, "pyc_stale_or_missing": 0, "isolated": True,
                               "no_site": True, "stdlib_pyc_stale_or_missing": 0}
    assert out["python"] == find_interpreter("host").version
    assert not list(fx_pylibrary.content.rglob("*.cpython-*.pyc.*"))  # nothing written into the library


def test_python_library_manifest_and_cache(fx_pylibrary, tmp_path):
    m = fx_pylibrary.manifest
    assert fx_pylibrary.language == "python" and fx_pylibrary.mount_point == PY_MOUNT_POINT
    assert {e["module"]: e["import"] for e in m["modules"]} == {FX_OK: "shlib_fx_pyok", FX_RAISES: "shlib_fx_pyraises"}
    assert m["pyc_missing"] == 0 and m["python"]["cache_tag"].startswith("cpython-")
    assert m["files"] == 6 and len(m["tree_hash"]) == 64  # 3 sources + their 3 .pyc
    assert sorted(fx_pylibrary.members()) == ["shlib_fx_pyok", "shlib_fx_pyraises"]
    again = install_python_library([], root=fx_pylibrary.path.parent,
                                   local={FX_OK: PYFIXTURES / "shlib_fx_pyok",
                                          FX_RAISES: PYFIXTURES / "shlib_fx_pyraises"})
    assert again.path == fx_pylibrary.path and again.tree_hash == fx_pylibrary.tree_hash
    with pytest.raises(Exception, match="not Python modules: lodash"):
        install_python_library(["lodash"], root=tmp_path)


def test_the_python_image_root_holds_the_interpreter_its_stdlib_and_the_probe():
    interp = find_interpreter("host")
    with tarfile.open(fileobj=io.BytesIO(rootfs_tar(interp, []))) as tar:
        names = set(tar.getnames())
        assert interp.executable.lstrip("/") in names
        assert f"{interp.stdlib.lstrip('/')}/os.py" in names
        assert PY_PROBE_PATH.lstrip("/") in names and "etc/passwd" in names
        assert not any("/site-packages/" in n or "/dist-packages/" in n for n in names)
        assert any(n.endswith("libc.so.6") for n in names)
        assert all(m.uid == 0 for m in tar.getmembers())


def test_python_containers_get_the_same_lockdown_with_the_python_command():
    batch = ContainerBatch(mock.Mock(), 10.0)
    node = batch.create_kwargs("img", "runc", ("lodash",), "/shlib/lib", {}, {})
    cmd = python_command("/usr/bin/python3.11", PY_PROBE_PATH, '{"lib": "/shlib/pylib"}')
    py = batch.create_kwargs("img", "runc", ("numpy",), PY_MOUNT_POINT, {}, {}, command=cmd)
    assert py["command"] == ["/usr/bin/python3.11", "-I", "-S", "-B", PY_PROBE_PATH, '{"lib": "/shlib/pylib"}']
    assert {k: v for k, v in py.items() if k != "command"} == {k: v for k, v in node.items() if k != "command"}


def test_native_python_run_records_language_interpreter_and_errors(fx_pylibrary, tmp_path):
    spec = {"name": "t-py-native", "runtimes": ["native"], "modules": [f"py:{FX_OK}", f"py:{FX_RAISES}"],
            "concurrency": [1, 2], "repetitions": 2, "seed": 4}
    out = runner.run_experiment(spec, tmp_path / "run", progress=False, library=fx_pylibrary)
    df, meta = load_results(out)
    assert set(df["language"].astype(str)) == {"python"} and df["node_version"].isna().all()
    assert set(df["interpreter_version"]) == {find_interpreter("host").version}
    ok, bad = df[df["module"] == FX_OK], df[df["module"] == FX_RAISES]
    assert len(ok) == len(bad) == 2 * (1 + 2)
    assert (ok["status"] == "ok").all() and (ok["load_ms"] > 0).all() and (ok["files_loaded"] == 2).all()
    assert (bad["status"] == "error").all() and bad["load_ms"].isna().all()
    assert bad["error"].eq("RuntimeError: shlib-fx-pyraises fails on import").all()
    assert meta.counts == {"ok": 6, "error": 6}
    assert meta.library.model_extra["python_libraries"]["python:host"]["tree_hash"] == fx_pylibrary.tree_hash


# ---- against the real engine -------------------------------------------------------------------------


@pytest.mark.docker
def test_real_python_run_native_runc_gvisor(client, gvisor_runtimes, fx_pylibrary, tmp_path):
    """A Python run under native, runc and one gVisor build: rows of language python, errors per module."""
    gvisor = "runsc-20240729-systrap" if "runsc-20240729-systrap" in gvisor_runtimes else gvisor_runtimes[0]
    spec = {"name": "t-py-real", "runtimes": ["native", "runc", gvisor],
            "modules": [f"py:{FX_OK}", f"py:{FX_RAISES}"], "concurrency": [1, 2], "repetitions": 1,
            "mount": ["volume", "bind", "image"], "seed": 9}
    out = runner.run_experiment(spec, tmp_path / "run", client=client, progress=False, library=fx_pylibrary)
    df, meta = load_results(out)
    assert set(df["runtime"].astype(str)) == {"native", "runc", gvisor}
    assert set(df["engine_runtime"]) == {"native", "runc", gvisor}
    assert set(df["language"].astype(str)) == {"python"} and df["interpreter_version"].notna().all()
    ok, bad = df[df["module"] == FX_OK], df[df["module"] == FX_RAISES]
    assert (ok["status"] == "ok").all() and (ok["load_ms"] > 0).all(), ok[["runtime", "mount", "status", "error"]]
    assert (bad["status"] == "error").all() and bad["error"].str.contains("fails on import").all()
    assert set(df["mount"].astype(str)) == {"host", "volume", "bind", "image"}
    image = meta.images["python:host"]
    assert image.image_id.startswith("sha256:") and image.model_extra["python_version"] == \
        find_interpreter("host").version
    assert (df.loc[df["runtime"] != "native", "image_id"] == image.image_id).all()
    assert_run_left_nothing(client, out)


@pytest.mark.docker
def test_real_mixed_node_and_python_run_with_pip_packages(client, tmp_path):
    """npm and PyPI modules in one spec: each loaded by its own probe from its own library."""
    spec = {"name": "t-mixed", "runtimes": ["native", "runc"], "modules": ["npm:lodash@4.17.20",
                                                                           "py:requests==2.32.3"],
            "concurrency": [1], "repetitions": 2, "seed": 2}
    out = runner.run_experiment(spec, tmp_path / "run", client=client, progress=False)
    df, meta = load_results(out)
    assert meta.counts == {"ok": 2 * 2 * 2}
    by = df.groupby(["module", "language"], observed=True).size()
    assert by.to_dict() == {("lodash", "node"): 4, ("requests", "python"): 4}
    py = df[df["language"] == "python"]
    assert (py["module_version"] == "2.32.3").all() and (py["load_ms"] > 0).all()
    assert (py["files_loaded"] > 10).all()  # requests imports urllib3, idna, charset_normalizer, ...
    node = df[df["language"] == "node"]
    assert (node["interpreter_version"] == node["node_version"]).all()
    packages = meta.library.model_extra["python_libraries"]["python:host"]["packages"]
    assert packages["requests"] == "2.32.3" and {"urllib3", "idna", "certifi", "charset-normalizer"} <= set(packages)
    assert_run_left_nothing(client, out)


# ---- analysis: language is a factor ----------------------------------------------------------------


def _two_language_frame(languages=("node", "python")):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    penalty = {"node": 4.0, "python": 2.5}
    modules = {"node": ["lodash", "express"], "python": ["numpy", "requests"]}
    rows, batch = [], 0
    for rep in range(6):
        for language in languages:
            for module in modules[language]:
                for runtime, factor in (("runc", 1.0), ("runsc-x", penalty[language]), ("native", 0.8)):
                    batch += 1
                    rows.append({"runtime": runtime, "module": module, "concurrency": 1, "status": "ok",
                                 "load_ms": 50 * factor * float(np.exp(rng.normal(0, 0.05))), "batch_id": batch,
                                 "rep": rep, "language": language,
                                 "interpreter_version": "v20.0.0" if language == "node" else "3.11.2"})
    return pd.DataFrame(rows)


def test_ratios_are_per_language_and_the_replication_judges_node_only():
    from shlib.analysis.analyze import analyze_frame
    from shlib.present import plots, readings

    both = analyze_frame(_two_language_frame(), n_resamples=200)
    summary = both.ratio_summary[(both.ratio_summary["statistic"] == "median")
                                 & (both.ratio_summary["runtime"] == "runsc-x")].set_index("language")
    assert summary.loc["node", "gmean_ratio"] == pytest.approx(4.0, rel=0.1)
    assert summary.loc["python", "gmean_ratio"] == pytest.approx(2.5, rel=0.1)
    assert summary.loc["python", "modules"] == "numpy, requests"  # never a ratio over both languages
    judged = both.replication[both.replication["claim_id"] == "KY2020-gvisor-docker-max"].iloc[0]
    assert judged["n_cells"] == 2 and "numpy" not in judged["reason"] and "requests" not in judged["reason"]
    assert judged["estimate"] == pytest.approx(4.0, rel=0.15)  # the Node cells, not Python's 2.5x
    assert "Sandbox penalty by language" in readings.language_reading(both)
    from shlib.present import tables  # the notebooks' tables keep one row per runtime and language

    by_level = tables.ratio_by_concurrency(both.ratio_summary, both.baseline)
    assert {("runsc-x", "node"), ("runsc-x", "python")} <= {key[:2] for key in by_level.index}
    assert len(tables.tests_overview(both.tests)) == len(by_level)
    assert len(plots.plot_language_penalty(both.ratio_summary, both.baseline).axes) >= 1

    python_only = analyze_frame(_two_language_frame(("python",)), n_resamples=200)
    assert set(python_only.replication["verdict"]) == {"not measured (runtime absent)"}
    assert python_only.replication["reason"].str.contains("no Node.js cell").all()
    assert readings.language_reading(python_only).startswith("**One language only** (python)")
    fig = plots.plot_language_penalty(python_only.ratio_summary, python_only.baseline)
    assert "one language only" in fig.axes[0].texts[0].get_text()


@pytest.mark.docker
@pytest.mark.parametrize("suite, version", [("trixie", "3.13"), ("bookworm", "3.11")])
def test_a_debian_interpreter_is_a_second_interpreter_version(client, fx_pylibrary, tmp_path, suite, version):
    """Debian's python3.13 (trixie, merged /usr) and python3.11 (bookworm, split /usr), unpacked from their
    packages, run in their own image and natively through their own loader."""
    source, tag = f"debian:{suite}", f"cpython-{version.replace('.', '')}"
    interp = find_interpreter(source)
    assert interp.version.startswith(f"{version}.") and interp.image_executable == f"/usr/bin/python{version}"
    # the standard library is compiled, as Debian's postinst would (dpkg -x runs none): imports use .pyc
    assert any((Path(interp.root) / f"usr/lib/python{version}/email/__pycache__").glob(f"*.{tag}.pyc"))
    library = install_python_library([], root=tmp_path / "pylibs", source=source,
                                     local={FX_OK: PYFIXTURES / "shlib_fx_pyok",
                                            FX_RAISES: PYFIXTURES / "shlib_fx_pyraises"})
    assert library.manifest["python"]["cache_tag"] == tag and library.manifest["pyc_missing"] == 0
    spec = {"name": "t-py-debian", "runtimes": ["native", "runc"], "modules": [f"py:{FX_OK}", f"py:{FX_RAISES}"],
            "python": [source], "repetitions": 1, "seed": 5}
    out = runner.run_experiment(spec, tmp_path / "run", client=client, progress=False, library=library)
    df, meta = load_results(out)
    assert set(df["interpreter_version"]) == {interp.version}
    assert (df.loc[df["module"] == FX_OK, "status"] == "ok").all()
    assert (df.loc[df["module"] == FX_RAISES, "status"] == "error").all()
    assert meta.images[f"python:{source}"].model_extra["python_version"] == interp.version
    assert_run_left_nothing(client, out)


def test_a_split_usr_root_is_merged_and_its_absolute_links_stay_inside(tmp_path):
    """bookworm's packages unpack /lib, /lib64 and /bin as real directories, with the loader an absolute
    link: after the merge the root has trixie's layout and the loader resolves inside the root."""
    from shlib.collect.debpython import LOADER, merge_usr

    root = tmp_path / "root"
    (root / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (root / "lib" / "x86_64-linux-gnu" / "ld-linux-x86-64.so.2").write_text("loader")
    (root / "lib64").mkdir()
    (root / "lib64" / "ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "python3.11").write_text("python")
    (root / "usr" / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (root / "usr" / "lib" / "x86_64-linux-gnu" / "libz.so.1").write_text("z")
    merge_usr(root)
    for name in ("lib", "lib64", "bin"):
        assert (root / name).is_symlink() and os.readlink(root / name) == f"usr/{name}"
    assert (root / "usr/lib/x86_64-linux-gnu/libz.so.1").read_text() == "z"  # merged, nothing lost
    loader = root / LOADER
    assert not os.readlink(loader).startswith("/")
    assert loader.resolve().is_relative_to(root.resolve()) and loader.read_text() == "loader"
