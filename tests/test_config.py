"""Spec validation: every field's bad input gets a message naming the field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from shlib.errors import SpecError
from shlib.spec.modules import MODULE_SETS, parse_module
from shlib.spec.spec import Spec, load_spec, make_spec, preset, preset_names

BAD = [
    ("name", "", "name"),
    ("name", "a;b", "name"),
    ("runtimes", [], "at least one runtime"),
    ("runtimes", ["runc", "runc"], "listed twice"),
    ("runtimes", ["run c"], "not a runtime name"),
    ("runtimes", 3, "runtimes"),
    ("modules", [], "at least one module"),
    ("modules", ["Lodash"], "not a valid npm package spec"),
    ("modules", ["lodash", "lodash@4.17.21"], "listed twice"),
    ("modules", ["../etc/passwd"], "not a valid npm package spec"),
    ("modules", ["lodash@4;rm -rf /"], "not a valid npm package spec"),
    ("modules", ["a" * 215], "at most 214"),
    ("modules", "no-such-set!", "not a valid npm package spec"),
    ("concurrency", [0], "from 1 to 256"),
    ("concurrency", [257], "from 1 to 256"),
    ("concurrency", [-4], "from 1 to 256"),
    ("concurrency", [True], "from 1 to 256"),
    ("concurrency", [1, 1], "listed twice"),
    ("concurrency", [], "at least one concurrency level"),
    ("repetitions", 0, "greater than or equal to 1"),
    ("repetitions", 10**9, "less than or equal to 100000"),
    ("load_mode", "parallel", "'isolated' or 'sequence'"),
    ("mount", ["nfs"], "'volume', 'bind' or 'image'"),
    ("mount", [], "at least one level"),
    ("cache", ["hot"], "'warm' or 'cold'"),
    ("cache", ["warm", "warm"], "listed twice"),
    ("node", ["wheel:18"], "not a node source"),
    ("seed", -1, "greater than or equal to 0"),
    ("timeout_s", 0, "greater than 0"),
    ("max_consecutive_failures", 0, "greater than or equal to 1"),
    ("memory_mb", 1, "greater than or equal to 64"),
    ("pids_limit", 1, "greater than or equal to 16"),
    ("target_rel_halfwidth", 1.5, "less than 1"),
    ("min_repetitions", 1, "greater than or equal to 2"),
]


@pytest.mark.parametrize("field,value,message", BAD, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD)])
def test_each_bad_field_is_named_with_what_is_allowed(field, value, message):
    with pytest.raises(SpecError) as info:
        make_spec({field: value})
    text = str(info.value)
    assert f"\n  {field}" in text, text
    assert message in text, text


def test_unknown_field_lists_the_allowed_ones():
    with pytest.raises(SpecError, match="runtime: unknown field; allowed fields: name, runtimes"):
        make_spec({"runtime": ["runc"]})


def test_adaptive_minimum_cannot_exceed_the_maximum():
    with pytest.raises(SpecError, match="min_repetitions"):
        make_spec({"target_rel_halfwidth": 0.05, "min_repetitions": 10, "repetitions": 5})


def test_not_a_mapping():
    with pytest.raises(SpecError, match="mapping"):
        make_spec(["runc"])  # type: ignore[arg-type]


def test_shorthands_expand():
    spec = make_spec({"runtimes": "runc", "modules": "paper", "concurrency": 4, "mount": "bind"})
    assert spec.runtimes == ["runc"] and spec.modules == MODULE_SETS["paper"]
    assert spec.concurrency == [4] and spec.mount == ["bind"]


@pytest.mark.parametrize("spec,name,version", [
    ("lodash", "lodash", None), ("lodash@4.17.21", "lodash", "4.17.21"), ("@aws-sdk/client-s3@3.1.0",
                                                                           "@aws-sdk/client-s3", "3.1.0"),
    ("react@^18", "react", "^18"), ("uuid@latest", "uuid", "latest"),
])
def test_parse_module(spec, name, version):
    assert parse_module(spec) == (name, version)


def test_yaml_file_errors(tmp_path: Path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("runtimes: [runc\nmodules: {")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    good = tmp_path / "good.yaml"
    good.write_text("runtimes: [native]\nmodules: [lodash@4.17.20]\nrepetitions: 2\n")
    assert load_spec(good).repetitions == 2


def test_presets_are_valid_and_seeded():
    assert {"quick", "paper", "smoke"} <= set(preset_names())
    for name in preset_names():
        spec = preset(name)
        assert isinstance(spec, Spec) and spec.seed is not None
    assert preset("paper").concurrency == [1, 2, 4, 8, 16]
    with pytest.raises(SpecError, match="preset 'nope' does not exist; choose from: "):
        preset("nope")


def test_a_seed_is_always_drawn_and_kept():
    spec = make_spec({}).with_seed()
    assert spec.seed is not None and spec.with_seed().seed == spec.seed
