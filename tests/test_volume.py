"""The shared library: npm install, manifest, the named volume reused only by hash, read-only mounts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shlib.collect.library import MOUNT_POINT, _closure, ensure_library_image, ensure_volume, mount_kwargs, tree_digest


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
