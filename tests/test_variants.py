"""gVisor variants: flags parsed into switch columns with the build's defaults, and single-factor contrasts."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from shlib.analysis.variants import build_defaults, gvisor_contrasts, runtime_variants
from shlib.results.metadata import RunMetadata

V2024 = "runsc version 0.0~20240729.0"
V2022 = "runsc version 0.0~20221219.0"
NET = "--network=none"
REGISTERED = {  # name -> (version, args), as setup registers them
    "runsc-20221219-ptrace": (V2022, [NET, "--platform=ptrace"]),
    "runsc-20221219-ptrace-exclusive": (V2022, [NET, "--platform=ptrace", "--file-access-mounts=exclusive"]),
    "runsc-20240729-ptrace": (V2024, [NET, "--platform=ptrace"]),
    "runsc-20240729-systrap": (V2024, [NET, "--platform=systrap"]),
    "runsc-20240729-systrap-nodirectfs": (V2024, [NET, "--platform=systrap", "--directfs=false"]),
    "runsc-20240729-systrap-exclusive": (V2024, [NET, "--platform=systrap", "--file-access-mounts=exclusive"]),
    "runsc-20240729-systrap-overlaynone": (V2024, [NET, "--platform=systrap", "--overlay2=none"]),
    "runsc-20240729-systrap-dcache100": (V2024, [NET, "--platform=systrap", "--dcache=100"]),
    "runsc-20240729-systrap-dcache10000": (V2024, [NET, "--platform=systrap", "--dcache=10000"]),
}


def metadata() -> RunMetadata:
    runtimes = {"runc": {"name": "runc", "kind": "runc", "path": "runc"}}
    for name, (version, args) in REGISTERED.items():
        runtimes[name] = {"name": name, "kind": "gvisor", "path": "/x/runsc", "args": args, "version": version,
                          "platform": args[1].split("=")[1]}
    return RunMetadata(run_id="r", runtimes=runtimes)


@pytest.mark.parametrize("from_metadata", [True, False])
def test_switches_are_columns_with_build_defaults_filled_in(from_metadata):
    v = runtime_variants(metadata() if from_metadata else None, ["runc", *REGISTERED]).set_index("runtime")
    cols = ["gvisor_build", "platform", "directfs", "file_access_mounts", "overlay2", "dcache"]
    assert list(v.loc["runsc-20240729-systrap", cols]) == ["20240729", "systrap", "true", "shared", "root:self", "-1"]
    assert list(v.loc["runsc-20221219-ptrace", cols]) == ["20221219", "ptrace", "", "shared", "none", "-1"]
    assert v.at["runsc-20240729-systrap-nodirectfs", "directfs"] == "false"
    assert v.at["runsc-20240729-systrap-exclusive", "file_access_mounts"] == "exclusive"
    assert v.at["runsc-20221219-ptrace-exclusive", "file_access_mounts"] == "exclusive"
    assert v.at["runsc-20240729-systrap-overlaynone", "overlay2"] == "none"
    assert v.at["runsc-20240729-systrap-dcache10000", "dcache"] == "10000"
    assert list(v.loc["runc", cols]) == ["", "", "", "", "", ""]


def test_build_defaults_by_generation():
    assert build_defaults("20221219") == {"platform": "ptrace", "directfs": "", "file_access_mounts": "shared",
                                          "overlay2": "none", "dcache": "-1"}
    assert build_defaults("20240729")["directfs"] == "true"


def _all_pairs(names: list[str]) -> pd.DataFrame:
    rows = [{"runtime": a, "baseline": b, "concurrency": c, "statistic": "median", "gmean_ratio": 1.1, "ci_low": 1.0,
             "ci_high": 1.2, "n_modules": 3, "note": ""}
            for a, b in itertools.permutations(names, 2) for c in (1, 2)]
    return pd.DataFrame(rows)


def test_each_switch_is_contrasted_with_its_build_default():
    v = runtime_variants(metadata(), ["runc", *REGISTERED])
    c = gvisor_contrasts(v, _all_pairs(list(REGISTERED)))
    pairs = {(r.factor, r.runtime, r.compared_with, r.from_value, r.to_value) for r in c.itertuples()}
    assert pairs == {
        ("gvisor_build", "runsc-20240729-ptrace", "runsc-20221219-ptrace", "20221219", "20240729"),
        ("platform", "runsc-20240729-systrap", "runsc-20240729-ptrace", "ptrace", "systrap"),
        ("directfs", "runsc-20240729-systrap-nodirectfs", "runsc-20240729-systrap", "true", "false"),
        ("file_access_mounts", "runsc-20240729-systrap-exclusive", "runsc-20240729-systrap", "shared", "exclusive"),
        ("file_access_mounts", "runsc-20221219-ptrace-exclusive", "runsc-20221219-ptrace", "shared", "exclusive"),
        ("overlay2", "runsc-20240729-systrap-overlaynone", "runsc-20240729-systrap", "root:self", "none"),
        ("dcache", "runsc-20240729-systrap-dcache100", "runsc-20240729-systrap", "-1", "100"),
        ("dcache", "runsc-20240729-systrap-dcache10000", "runsc-20240729-systrap", "-1", "10000"),
    }
    assert len(c) == 2 * len(pairs)  # each at both concurrency levels, with its interval
    assert c[["ratio", "ci_low", "ci_high"]].notna().all().all()
    assert list(dict.fromkeys(c["factor"])) == ["gvisor_build", "platform", "directfs", "file_access_mounts",
                                                "overlay2", "dcache"]
    assert set(c.loc[c["factor"] == "directfs", "gvisor_build"]) == {"20240729"}


def test_switch_effects_and_reading_say_which_switches_matter():
    from shlib.present.readings import switch_reading
    from shlib.present.tables import switch_effects

    v = runtime_variants(metadata(), ["runc", *REGISTERED])
    pairs = _all_pairs(list(REGISTERED))
    slow = pairs["runtime"] == "runsc-20240729-systrap-nodirectfs"
    pairs.loc[slow, ["gmean_ratio", "ci_low", "ci_high"]] = [1.5, 1.3, 1.7]
    fast = pairs["runtime"] == "runsc-20240729-systrap-exclusive"
    pairs.loc[fast, ["gmean_ratio", "ci_low", "ci_high"]] = [0.8, 0.7, 0.9]
    c = gvisor_contrasts(v, pairs)
    table = switch_effects(c).set_index(["factor", "change", "build", "concurrency"])
    assert table.at[("directfs", "true -> false", "20240729", 1), "effect"] == "slower"
    assert table.at[("directfs", "true -> false", "20240729", 1), "load_time_ratio"] == "1.50x [1.30, 1.70]"
    assert table.at[("file-access-mounts", "shared -> exclusive", "20240729", 2), "effect"] == "faster"
    assert table.at[("overlay2", "root:self -> none", "20240729", 1), "effect"].startswith("no clear effect")
    text = switch_reading(c)
    lines = [x for x in text.splitlines() if x.startswith("- ")]
    assert lines[0].startswith("- directfs true -> false (build 20240729): load time x 1.50x [1.30, 1.70] at "
                               "concurrency 1")  # the largest effect first
    assert not any(x.startswith("- build") or x.startswith("- platform") for x in lines)
    assert lines[0].endswith(": slower") and "((" not in text and "))" not in text
    assert "No switch variant" in switch_reading(c[c["factor"] == "platform"])


def test_the_gvisor_settings_preset():
    from shlib.spec.spec import preset

    spec = preset("gvisor-settings")
    assert spec.concurrency == [1, 2] and spec.repetitions == 6 and spec.seed is not None
    assert spec.modules == preset("paper").modules
    names = set(spec.runtimes)
    assert {"runc", "runsc-20240729-systrap", "runsc-20221219-ptrace"} <= names
    suffixes = {n.removeprefix("runsc-20240729-systrap-") for n in names if n.startswith("runsc-20240729-systrap-")}
    assert suffixes == {"nodirectfs", "exclusive", "overlaynone", "dcache100", "dcache10000"}
