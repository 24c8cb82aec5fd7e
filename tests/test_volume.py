"""The shared library: npm install, manifest, the named volume reused only by hash, read-only mounts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shlib.collect import library as library_module
from shlib.collect.library import (
    MOUNT_POINT,
    _closure,
    ensure_library_image,
    ensure_volume,
    mount_kwargs,
    tree_digest,
    volume_marker,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_tree_digest_changes_with_content_and_names(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.js").write_text("1")
    first = tree_digest(tmp_path)
    assert first[1:] == (1, 1)
    (tmp_path / "a" / "x.js").write_text("2")
    assert tree_digest(tmp_path)[0] != first[0]
    (tmp_path / "a" / "x.js").rename(tmp_path / "a" / "y.js")
    assert tree_digest(tmp_path)[0] not in (first[0],)


def test_closure_follows_nested_then_hoisted_dependencies():
    lock = {"packages": {
        "node_modules/a": {"dependencies": {"b": "^1", "c": "^2"}},
        "node_modules/b": {"dependencies": {"c": "^1"}},
        "node_modules/b/node_modules/c": {},
        "node_modules/c": {},
        "node_modules/unrelated": {},
    }}
    assert sorted(_closure(lock, "a")) == ["node_modules/a", "node_modules/b", "node_modules/b/node_modules/c",
                                           "node_modules/c"]


def test_paper_library_manifest(paper_library):
    manifest = paper_library.manifest
    by_name = {m["module"]: m for m in manifest["modules"]}
    assert by_name["lodash"]["version"] == "4.17.20" and by_name["express"]["version"] == "4.17.1"
    assert by_name["react"]["version"] == "16.14.0"
    assert by_name["express"]["packages"] > 20  # express pulls in dozens of packages
    assert all(m["files"] > 0 and m["bytes"] > 0 for m in manifest["modules"])
    assert manifest["files"] >= sum(m["files"] for m in manifest["modules"]) - 1
    assert len(manifest["tree_hash"]) == 64
    assert json.loads((paper_library.path / "shlib-manifest.json").read_text()) == manifest


@pytest.mark.docker
def test_volume_is_reused_by_hash_and_refilled_when_it_differs(client, paper_library, node_image, paper_volume):
    volume = client.volumes.get(paper_volume)
    assert volume.attrs["Labels"]["shlib.tree_hash"] == paper_library.tree_hash
    created = volume.attrs["CreatedAt"]
    assert ensure_volume(client, paper_library, node_image) == paper_volume
    assert client.volumes.get(paper_volume).attrs["CreatedAt"] == created  # reused, not rebuilt


@pytest.mark.docker
@pytest.mark.parametrize("mode", ["volume", "bind", "image"])
def test_library_is_readable_and_read_only_in_every_mount_mode(client, paper_library, node_image, paper_volume,
                                                                mode, test_labels, no_leftovers):
    image = ensure_library_image(client, paper_library, node_image) if mode == "image" else node_image.tag
    script = (
        "const fs = require('fs');"
        f"const v = require('{MOUNT_POINT}/node_modules/lodash/package.json').version;"
        f"let w = 'written'; try {{ fs.writeFileSync('{MOUNT_POINT}/x', '1'); }} catch (e) {{ w = e.code; }}"
        "console.log(v + ' ' + w);"
    )
    out = client.containers.run(image, ["node", "-e", script], user="1000:1000", network_mode="none",
                                read_only=True, remove=True, labels=test_labels,
                                **mount_kwargs(mode, paper_library, paper_volume))
    version, write = out.decode().split()
    assert version == "4.17.20"
    assert write in ("EROFS", "EACCES")


def _unique_library(tmp_path: Path):
    """A library of its own (a fixture package plus one with a random token), so its volume is this test's."""
    import uuid

    from shlib.collect.library import install_library

    token = tmp_path / "shlib-fx-token"
    token.mkdir()
    (token / "package.json").write_text(json.dumps({"name": "shlib-fx-token", "version": "1.0.0"}))
    (token / "index.js").write_text(f"module.exports = {str(uuid.uuid4())!r};\n")
    return install_library([], root=tmp_path / "libs",
                           local={"shlib-fx-ok": FIXTURES / "shlib-fx-ok", "shlib-fx-token": token})


def _killed_fill(client, library, image, content: str) -> None:
    """What a fill killed midway leaves: the volume with its labels, a prefix of the tar (or nothing), no marker."""
    import io
    import tarfile

    from shlib.collect.engine import LABEL
    from shlib.collect.library import library_tar

    client.volumes.create(library.volume_name, labels={LABEL: "true", "shlib.tree_hash": library.tree_hash,
                                                       "shlib.filling": "1"})
    if content == "none":
        return
    whole = tarfile.open(fileobj=io.BytesIO(library_tar(library)))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as part:
        for member in whole.getmembers():
            if member.name.endswith("shlib-fx-ok/index.js"):
                break  # the kill came before this file
            part.addfile(member, whole.extractfile(member) if member.isfile() else None)
    helper = client.containers.create(image.tag, ["true"], labels={LABEL: "true"}, network_mode="none",
                                      volumes={library.volume_name: {"bind": MOUNT_POINT, "mode": "rw"}})
    try:
        assert helper.put_archive(MOUNT_POINT, buf.getvalue())
    finally:
        helper.remove(force=True)


@pytest.mark.docker
@pytest.mark.parametrize("content", ["none", "partial"])
def test_a_volume_whose_fill_was_killed_is_refilled(client, node_image, tmp_path, content, test_labels, no_leftovers):
    from shlib.collect.image import PROBE_PATH

    library = _unique_library(tmp_path)
    _killed_fill(client, library, node_image, content)
    try:
        assert ensure_volume(client, library, node_image) == library.volume_name
        arg = json.dumps({"lib": MOUNT_POINT, "modules": ["shlib-fx-ok"], "barrier": False})
        out = client.containers.run(node_image.tag, ["node", PROBE_PATH, arg], user="1000:1000", network_mode="none",
                                    remove=True, labels=test_labels,
                                    **mount_kwargs("volume", library, library.volume_name))
        (result,) = json.loads(out.decode().strip().splitlines()[-1])["results"]
        assert result["ok"], result
        assert volume_marker(client, library.volume_name, node_image) == library.tree_hash
    finally:
        client.volumes.get(library.volume_name).remove(force=True)


@pytest.mark.docker
def test_a_complete_volume_is_reused_without_a_refill_and_the_check_is_cheap(client, node_image, tmp_path,
                                                                             monkeypatch):
    import statistics
    import time

    library = _unique_library(tmp_path)
    try:
        ensure_volume(client, library, node_image)
        created = client.volumes.get(library.volume_name).attrs["CreatedAt"]

        def no_refill(*args, **kwargs):
            raise AssertionError("a complete volume was filled again")

        monkeypatch.setattr(library_module, "_fill_volume", no_refill)
        took = []
        for _ in range(5):
            start = time.perf_counter()
            assert ensure_volume(client, library, node_image) == library.volume_name
            took.append(time.perf_counter() - start)
        assert client.volumes.get(library.volume_name).attrs["CreatedAt"] == created
        assert statistics.median(took) < 1.0, took  # one helper created, one get_archive, one remove
    finally:
        client.volumes.get(library.volume_name).remove(force=True)
