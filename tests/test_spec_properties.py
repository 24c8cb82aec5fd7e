"""Property-based tests of the spec parser and module-name validation (no engine needed).

Whatever a user types, either the spec is refused with a message naming the field, or what
is accepted is safe to hand to npm, a shell, a path join and a container: npm's naming rules,
no shell metacharacters, no '..', bounded sizes; and an accepted spec round-trips.
"""

from __future__ import annotations

import re
import string
import sys

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from packaging.utils import canonicalize_name

from shlib.errors import SpecError
from shlib.spec.modules import CORE_MODULES, MAX_MODULE_SPEC, MAX_PY_SPEC, parse_module, parse_ref
from shlib.spec.spec import MAX_CONCURRENCY, Spec, load_spec, make_spec

SHELL_META = set(";&|$`\\\"'<>(){}[]*?!#~ \t\n\r\x00%^=,:+") - {"^"}  # '^' only as a version range prefix
#: npm's rules for new package names (validate-npm-package-name), restated independently.
NPM_NAME = re.compile(r"^(?:@[a-z0-9-][a-z0-9._-]*/)?[a-z0-9-][a-z0-9._-]*$")

name_chars = st.sampled_from(string.ascii_lowercase + string.digits + "-._")
npm_names = st.builds(lambda first, rest: first + rest, st.sampled_from(string.ascii_lowercase + string.digits),
                      st.text(name_chars, max_size=30)).filter(lambda n: ".." not in n and n not in CORE_MODULES)
versions = st.from_regex(r"\A[\^~]?[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\Z")
valid_specs = st.builds(lambda scope, name, version: (f"@{scope}/" if scope else "") + name
                        + (f"@{version}" if version else ""),
                        st.none() | npm_names, npm_names, st.none() | versions)
nasty = st.lists(st.sampled_from(sorted(SHELL_META) + list("./@-_aZ09") + ["..", "../", "\u00e9", "\U0001f600"]),
                 max_size=40).map("".join)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), nasty, valid_specs))
@example("lodash; rm -rf /")
@example("../../etc/passwd")
@example("@scope/../x")
@example("a..b")
@example("$(reboot)")
@example("")
@example("a" * (MAX_MODULE_SPEC + 1))
@example("node_modules")
@example("events")
@example("lodash@`id`")
@example("lodash\n")
def test_anything_parse_module_accepts_is_a_safe_npm_spec(text):
    try:
        name, version = parse_module(text)
    except ValueError as exc:
        assert str(exc)  # refused with a message
        return
    assert 0 < len(text) <= MAX_MODULE_SPEC
    assert NPM_NAME.match(name), name
    assert name == name.lower() and not name.startswith((".", "_"))
    assert ".." not in text and not (set(text) & SHELL_META - {"~"}), text
    assert "~" not in name  # npm: no ~'!()* in new names ('~' is allowed only as a version range)
    assert name not in CORE_MODULES and name not in {"node_modules", "favicon.ico"}
    assert text == name + (f"@{version}" if version else "")


@given(valid_specs)
def test_every_valid_npm_spec_is_accepted(text):
    name, version = parse_module(text)
    assert text.startswith(name)


@given(st.text(max_size=60))
def test_runtime_names_are_refused_or_plain(text):
    try:
        spec = make_spec({"runtimes": [text]})
    except SpecError as exc:
        assert "runtimes" in str(exc)
        return
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", spec.runtimes[0])


specs = st.fixed_dictionaries({}, optional={
    "name": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._ -]{0,20}\Z"),
    "runtimes": st.just("all") | st.lists(st.from_regex(r"\A[a-z][a-z0-9._-]{0,15}\Z"), min_size=1, max_size=4,
                                          unique=True),
    "modules": st.sampled_from(["paper", "serverless"]) | st.lists(valid_specs, min_size=1, max_size=4).filter(
        lambda ms: len({parse_module(m)[0] for m in ms}) == len(ms)),
    "concurrency": st.lists(st.integers(1, MAX_CONCURRENCY), min_size=1, max_size=5, unique=True),
    "repetitions": st.integers(1, 1000),
    "load_mode": st.sampled_from(["isolated", "sequence"]),
    "mount": st.lists(st.sampled_from(["volume", "bind", "image"]), min_size=1, unique=True),
    "cache": st.lists(st.sampled_from(["warm", "cold"]), min_size=1, unique=True),
    "node": st.lists(st.sampled_from(["host", "wheel:20", "wheel:22", "pull:20-slim"]), min_size=1, unique=True),
    "seed": st.none() | st.integers(0, 2**63 - 1),
    "timeout_s": st.floats(0.001, 3600, allow_nan=False),
    "max_consecutive_failures": st.integers(1, 10_000),
    "memory_mb": st.integers(64, 65536),
    "pids_limit": st.integers(16, 65536),
})


@settings(max_examples=300)
@given(data=specs)
def test_valid_specs_round_trip_through_dict_and_yaml(data, tmp_path_factory):
    spec = make_spec(data)
    assert make_spec(spec.as_dict()) == spec
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.as_dict()))
    assert load_spec(path) == spec
    seeded = spec.with_seed()
    assert seeded.seed is not None and make_spec(seeded.as_dict()) == seeded


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(list(Spec.model_fields) + ["bogus", "runtime", "module"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                                 st.text(max_size=20), st.lists(st.one_of(st.integers(-5, 300), st.text(max_size=8)),
                                                                max_size=4)),
                       max_size=5))
def test_any_mapping_is_accepted_valid_or_refused_naming_the_field(data):
    try:
        spec = make_spec(data)
    except SpecError as exc:
        message = str(exc)
        assert message.startswith("invalid experiment spec:")
        fields = [line.split(":", 1)[0].strip().split(".")[0] for line in message.splitlines()[1:]]
        assert fields and all(f in data for f in fields), (message, data)
        return
    assert all(1 <= c <= MAX_CONCURRENCY for c in spec.concurrency)
    assert 1 <= spec.repetitions <= 100_000
    for module in spec.modules:
        parse_ref(module)


@pytest.mark.parametrize("data, field, allowed", [
    ({"modules": ["lodash; rm -rf /"]}, "modules", "valid npm package spec"),
    ({"modules": ["../../etc"]}, "modules", "no '..'"),
    ({"modules": [""]}, "modules", "non-empty"),
    ({"modules": ["a" * 500]}, "modules", "at most 214"),
    ({"modules": ["events"]}, "modules", "core module"),
    ({"concurrency": [-4]}, "concurrency", "from 1 to 256"),
    ({"concurrency": [10**9]}, "concurrency", "from 1 to 256"),
    ({"concurrency": 0}, "concurrency", "from 1 to 256"),
    ({"repetitions": -1}, "repetitions", "greater than or equal to 1"),
    ({"repetitions": 10**9}, "repetitions", "less than or equal to 100000"),
    ({"runtimes": ["runc && reboot"]}, "runtimes", "letters, digits"),
    ({"load_mode": "parallel"}, "load_mode", "'isolated' or 'sequence'"),
    ({"mount": ["tmpfs"]}, "mount", "'volume', 'bind' or 'image'"),
    ({"node": ["../node"]}, "node", "'host', 'wheel:20'"),
    ({"timeout_s": 0}, "timeout_s", "greater than 0"),
    ({"runtime": ["runc"]}, "runtime", "unknown field; allowed fields: name, runtimes"),
])
def test_each_bad_field_is_named_with_what_is_allowed(data, field, allowed):
    with pytest.raises(SpecError) as info:
        make_spec(data)
    line = next(line for line in str(info.value).splitlines() if re.match(rf"\s*{field}(\.\d+)?:", line))
    assert allowed in line, line


@pytest.mark.parametrize("text, expected", [
    ("runtimes: [runc\n", "not valid YAML"),
    ("- runc\n- native\n", "mapping of fields"),
    ("modules:\n\t- lodash\n", "not valid YAML"),
    ("concurrency: [1, 1]\n", "concurrency: a concurrency level is listed twice"),
    (b"\xff\xfe\x00modules", "UTF-8"),
])
def test_malformed_yaml_is_refused_with_a_specific_message(tmp_path, text, expected):
    path = tmp_path / "spec.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SpecError, match=re.escape(expected)):
        load_spec(path)


# ---- Python requirements (py:...) --------------------------------------------------------------------

#: PEP 508 names, restated independently: letters/digits, inner . _ -, starting and ending alphanumeric.
PY_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
py_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9._-]{0,20}[A-Za-z0-9]\Z").filter(
    lambda n: ".." not in n and n.lower().replace("-", "_").replace(".", "_") not in sys.stdlib_module_names)
py_versions = st.from_regex(r"\A[0-9]{1,3}(\.[0-9]{1,3}){0,3}((a|b|rc)[0-9]{1,2})?\Z")
valid_py = st.builds(lambda name, version: f"py:{name}" + (f"=={version}" if version else ""), py_names,
                     st.none() | py_versions)
hostile_py = st.lists(st.sampled_from(sorted(SHELL_META) + list("./@-_aZ09") + [
    "..", "../", "://", "git+", "-e ", "--index-url ", ";", " @ ", "[x]", ">=", "~=", "==", "file:", "\u00e9"]),
    max_size=30).map(lambda parts: "py:" + "".join(parts))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=250).map(lambda t: "py:" + t), hostile_py, valid_py))
@example("py:numpy; rm -rf /")
@example("py:../x")
@example("py:https://example.org/x.whl")
@example("py:-e git+https://github.com/a/b")
@example("py:--index-url https://example.org numpy")
@example("py:numpy ; python_version > '3'")
@example("py:numpy==2.1.3 --hash=sha256:00")
@example("py:numpy==1.*")
@example("py:numpy==1!2.0")
@example("py:numpy==2.1.3+local")
@example("py:" + "a" * (MAX_PY_SPEC + 1))
def test_anything_a_python_spec_accepts_is_a_plain_pinned_name(text):
    """Accepted means: a name pip reads as a package of the index, optionally one exact pin, no more."""
    try:
        ref = parse_ref(text)
    except ValueError as exc:
        assert str(exc)
        return
    body = text[3:]
    assert ref.language == "python" and 0 < len(body) <= MAX_PY_SPEC
    name, _, version = body.partition("==")
    assert PY_NAME.match(name) and ".." not in body
    assert not set(body) & (SHELL_META - {"="}), body  # nothing a shell or pip would read as more
    assert not body.startswith("-") and "/" not in body and "@" not in body and ";" not in body
    assert ref.name == canonicalize_name(name) and ref.name not in sys.stdlib_module_names
    assert ref.version is None or version and ref.requirement == f"{ref.name}=={ref.version}"


@given(valid_py)
def test_every_plain_python_requirement_is_accepted(text):
    ref = parse_ref(text)
    assert ref.language == "python" and (ref.version is not None) == ("==" in text)
