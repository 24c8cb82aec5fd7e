"""Kata variants by shared_fs and virtio_fs_cache: configuration generation (pure; no Kata needed)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from shlib.collect import daemon_json, kata
from shlib.collect.kata import KataVariant, kata_variants, set_keys, variant_config

#: A cut of Kata 3.x's configuration-qemu.toml: the keys live in [hypervisor.qemu], commented alternatives.
BASE = """# Copyright (c) 2017-2019 Intel Corporation
[hypervisor.qemu]
path = "/opt/kata/bin/qemu-system-x86_64"
kernel = "/opt/kata/share/kata-containers/vmlinux.container"
# Shared file system type:
#   - virtio-fs (default)
#   - virtio-9p
#   - virtio-fs-nydus
#   - none
shared_fs = "virtio-fs"
virtio_fs_daemon = "/opt/kata/libexec/virtiofsd"
# Cache mode:
#  - never, metadata, auto (default), always
virtio_fs_cache = "auto"
msize_9p = 8192

[agent.kata]
debug = false
# shared_fs = "not this one"
"""
CLH = """[hypervisor.clh]
path = "/opt/kata/bin/cloud-hypervisor"
#shared_fs = "virtio-fs"

[runtime]
internetworking_model = "tcfilter"
"""


def test_variants_by_shared_fs_and_cache_mode():
    names = [v.name for v in kata_variants("qemu")]
    assert names == ["kata-virtiofs-never", "kata-virtiofs-metadata", "kata-virtiofs-auto", "kata-virtiofs-always",
                     "kata-9p"]
    assert "kata-9p" not in [v.name for v in kata_variants("clh")]  # virtio-9p is QEMU's only
    with pytest.raises(ValueError, match="virtio_fs_cache"):
        KataVariant("virtio-fs", "sometimes")
    with pytest.raises(ValueError, match="virtio-fs only"):
        KataVariant("virtio-9p", "auto")


@pytest.mark.parametrize("variant", kata_variants("qemu"), ids=lambda v: v.name)
def test_each_config_sets_its_keys_and_keeps_the_rest(variant):
    text = variant_config(BASE, variant)
    parsed, base = tomllib.loads(text), tomllib.loads(BASE)
    qemu = parsed["hypervisor"]["qemu"]
    assert qemu["shared_fs"] == variant.shared_fs
    assert qemu["virtio_fs_cache"] == (variant.virtio_fs_cache or "auto")  # 9p leaves the cache key alone
    assert {k: v for k, v in qemu.items() if k not in variant.keys} == {
        k: v for k, v in base["hypervisor"]["qemu"].items() if k not in variant.keys}
    assert parsed["agent"] == base["agent"]  # another section's commented key is not touched
    assert text.count("\n") == BASE.count("\n")  # replaced in place, comments kept
    assert "#   - virtio-9p\n" in text


def test_a_key_only_commented_out_is_added_under_the_header():
    text = variant_config(CLH, KataVariant("virtio-fs", "never"))
    parsed = tomllib.loads(text)
    assert parsed["hypervisor"]["clh"] == {"path": "/opt/kata/bin/cloud-hypervisor", "shared_fs": "virtio-fs",
                                           "virtio_fs_cache": "never"}
    assert parsed["runtime"] == {"internetworking_model": "tcfilter"}
    with pytest.raises(ValueError, match="no virtio-9p"):
        variant_config(CLH, KataVariant("virtio-9p"))
    with pytest.raises(ValueError, match="no \\[hypervisor.x\\] section"):
        set_keys(CLH, "hypervisor.x", {"a": "b"})
    with pytest.raises(ValueError, match="not a Kata configuration"):
        kata.hypervisor_of("[runtime]\n")


def test_runtime_entries_point_each_variant_at_its_own_config(tmp_path):
    base = tmp_path / "configuration.toml"
    base.write_text(BASE)
    entries = kata.write_variant_configs(base, tmp_path / "kata")
    assert set(entries) == {v.name for v in kata_variants("qemu")}
    paths = {e["options"]["ConfigPath"] for e in entries.values()}
    assert len(paths) == len(entries)
    for name, entry in entries.items():
        assert entry["runtimeType"] == "io.containerd.kata.v2"
        text = Path(entry["options"]["ConfigPath"]).read_text()
        assert text.startswith(f"# shlib: {name}, generated from {base}\n")
        tomllib.loads(text)
    assert sorted(p.name for p in (tmp_path / "kata").iterdir()) == sorted(
        f"configuration-{n.removeprefix('kata-')}.toml" for n in entries)  # no temp file left
    assert kata.runtime_entry("/c.toml", kata_major=1) == {"path": "kata-runtime",
                                                            "runtimeArgs": ["--kata-config", "/c.toml"]}


def test_setup_registers_kata_variants_when_a_base_config_is_given(tmp_path):
    base = tmp_path / "configuration.toml"
    base.write_text(BASE)
    path = tmp_path / "daemon.json"
    assert daemon_json.main(["--daemon-json", str(path), "--kata-config", str(base),
                             "--kata-dir", str(tmp_path / "kata")]) == 0
    runtimes = json.loads(path.read_text())["runtimes"]
    assert set(runtimes) == {v.name for v in kata_variants("qemu")}
    assert runtimes["kata-9p"]["options"]["ConfigPath"] == str(tmp_path / "kata" / "configuration-9p.toml")


def test_kata_variants_are_kata_runtimes():
    from shlib.results.schema import runtime_kind

    assert {runtime_kind(v.name) for v in kata_variants("qemu")} == {"kata"}


def test_a_kata_variant_is_recorded_with_its_config_and_described_by_its_settings(tmp_path, monkeypatch):
    """The catalog keeps runtimeType and options (the ConfigPath: provenance); the analysis reads the settings."""
    from shlib.analysis.variants import describe_variants
    from shlib.collect import runtimes

    monkeypatch.setenv("SHLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runtimes, "smoke_container", lambda client, name, timeout_s=0: "")
    base = tmp_path / "configuration.toml"
    base.write_text(BASE)
    entries = kata.write_variant_configs(base, tmp_path / "kata")

    class Engine:
        def info(self):
            return {"Runtimes": {**entries, "runc": {"path": "runc"}}}

        def version(self):
            return {"Components": []}

    cat = runtimes.catalog(Engine())  # type: ignore[arg-type]
    never = cat["kata-virtiofs-never"]
    assert never.kind == "kata" and never.available
    assert never.runtime_type == "io.containerd.kata.v2"
    assert never.options == {"ConfigPath": str(tmp_path / "kata" / "configuration-virtiofs-never.toml")}
    records = {n: r.as_dict() for n, r in cat.items()}
    v = describe_variants(records, [*entries, "runc", "kata-runtime"]).set_index("runtime")
    assert tuple(v.loc["kata-virtiofs-never", ["shared_fs", "virtio_fs_cache"]]) == ("virtio-fs", "never")
    assert tuple(v.loc["kata-9p", ["shared_fs", "virtio_fs_cache"]]) == ("virtio-9p", "")
    assert tuple(v.loc["runc", ["shared_fs", "virtio_fs_cache"]]) == ("", "")
    assert tuple(v.loc["kata-runtime", ["shared_fs", "virtio_fs_cache"]]) == ("", "")  # the host's own config
    one = describe_variants({"k": {"kind": "kata", "args": ["--kata-config", "/x/configuration-virtiofs-always.toml"]}},
                            ["k"])
    assert tuple(one.loc[0, ["shared_fs", "virtio_fs_cache"]]) == ("virtio-fs", "always")  # Kata 1.x entry
