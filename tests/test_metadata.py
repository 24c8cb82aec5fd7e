"""metadata.json: one typed RunMetadata, older versions migrated on read, newer ones refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shlib.errors import ResultsError
from shlib.results.metadata import MIGRATIONS, RunMetadata, migrate
from shlib.results.schema import SCHEMA_VERSION
from shlib.results.store import load_results, read_metadata

DATA = Path(__file__).resolve().parent.parent / "data" / "runs"


def v1_metadata() -> dict:
    """A metadata.json as shlib 0.1 wrote it (schema_version 1, no runtime_set)."""
    return {"schema_version": 1, "run_id": "r1", "status": "complete", "spec": {"name": "x"}, "seed": 3,
            "runtimes": {"native": {"name": "native", "kind": "native", "available": True, "args": []},
                         "runsc-a": {"name": "runsc-a", "kind": "gvisor", "available": True, "args": ["--x"],
                                     "version": "runsc 20221219"}},
            "images": {"host": {"tag": "t", "image_id": "sha256:1", "node_version": "v20", "source": "host"}},
            "library": {"path": "/l", "modules": [{"module": "lodash"}], "tree_hash": "abc", "files": 1, "bytes": 2},
            "host": {"cpu_count": 2, "kernel": "6.1", "kvm": True}, "counts": {"ok": 4}}


def test_a_version_1_file_is_migrated_not_refused():
    meta = RunMetadata.from_dict(v1_metadata())
    assert meta.schema_version == SCHEMA_VERSION == 3
    assert meta.runtime_set == ["native", "runsc-a"]  # the plan's order, from v1's runtimes keys
    assert meta.runtimes["runsc-a"].args == ["--x"] and meta.host.cpu_count == 2
    assert meta.host.model_dump()["kvm"] is True  # a host fact shlib does not type is kept


def test_every_version_below_the_current_has_a_migration():
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))


def test_a_newer_file_is_refused_naming_both_versions():
    with pytest.raises(ResultsError, match=r"schema_version 4, written by a newer shlib; this shlib reads versions "
                                           r"1 to 3"):
        migrate({**v1_metadata(), "schema_version": 4})


def test_a_version_2_engine_becomes_the_default_docker_engine():
    meta = RunMetadata.from_dict({**v1_metadata(), "schema_version": 2, "engine": {"docker_version": "20.10"}})
    assert meta.engine == {"label": "default", "kind": "docker", "docker_version": "20.10"}


@pytest.mark.parametrize("field, value, message", [
    ("status", "done", r"status: Input should be 'running', 'complete', 'interrupted' or 'engine_failed'"),
    ("counts", {"ok": "many"}, r"counts\.ok: Input should be a valid integer"),
    ("colour", "blue", r"colour: Extra inputs are not permitted"),
])
def test_a_bad_field_is_named(field, value, message):
    with pytest.raises(ResultsError, match=message):
        RunMetadata.from_dict({**v1_metadata(), field: value})


def test_round_trip_through_json_is_exact():
    meta = RunMetadata.from_dict(v1_metadata())
    assert RunMetadata.from_dict(json.loads(json.dumps(meta.as_dict()))) == meta


@pytest.mark.parametrize("name", ["quick", "replication-2core"])
def test_the_committed_runs_load(name, tmp_path):
    """The committed datasets were written before the typed metadata: they load through the migration."""
    run = shutil.copytree(DATA / name, tmp_path / name)
    frame, meta = load_results(run)
    assert meta.runtime_set and set(frame["runtime"].astype(str)) <= set(meta.runtime_set)
    assert meta.library.tree_hash and all(img.image_id.startswith("sha256:") for img in meta.images.values())
    # rows from before schema v3: Node, on the run's one engine, interpreter = Node's version
    assert set(frame["language"].astype(str)) == {"node"} and set(frame["engine"]) == {"default"}
    assert (frame["interpreter_version"] == frame["node_version"]).all()
    assert set(frame.loc[frame["runtime"] == "native", "engine_kind"]) <= {"native"}
    assert set(frame.loc[frame["runtime"] != "native", "engine_kind"]) == {"docker"}


def test_unreadable_metadata_is_a_results_error(tmp_path):
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(ResultsError, match="is not valid JSON"):
        read_metadata(tmp_path)


def test_the_committed_campaign_merges_with_the_engine_as_a_factor():
    """data/runs/engines: one campaign, Docker then Podman on this host, loaded as one frame."""
    runs = sorted((DATA / "engines" / "engines").iterdir())
    frame, metas = load_results(runs)
    assert [m.engine["kind"] for m in metas] == ["docker", "podman"]
    assert set(frame["engine"]) == {m.engine["label"] for m in metas} and len(metas) == 2
    kinds = frame.groupby("engine")["engine_kind"].unique().map(lambda k: tuple(sorted(k)))
    assert sorted(kinds.tolist()) == [("docker",), ("podman",)]
    assert frame["run_id"].nunique() == 2 and (frame["status"] == "ok").all()
