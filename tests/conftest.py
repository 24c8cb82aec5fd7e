"""Shared fixtures. Tests marked ``docker`` need the real engine: they skip with the reason
where none can be reached, and fail instead when CI=true (CI starts the engine)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from helpers import no_engine, shlib_containers


@pytest.fixture(scope="session")
def client():
    """A client of the real engine."""
    from shlib.collect.engine import connect
    from shlib.errors import EngineUnavailable

    try:
        return connect(pool_size=80)
    except EngineUnavailable as exc:
        no_engine(str(exc))


@pytest.fixture(scope="session")
def known_runtimes(client):
    from shlib.collect.runtimes import catalog

    return catalog(client)


@pytest.fixture(scope="session")
def gvisor_runtimes(known_runtimes) -> list[str]:
    """Every available runsc build/platform registered with the engine."""
    return [n for n, rt in known_runtimes.items() if rt.kind == "gvisor" and rt.available]


@pytest.fixture(scope="session")
def node_image(client):
    from shlib.collect.image import ensure_image

    return ensure_image(client, "host")


@pytest.fixture(scope="session")
def paper_library():
    from shlib.collect.library import install_library
    from shlib.spec.modules import MODULE_SETS

    return install_library(MODULE_SETS["paper"])


@pytest.fixture(scope="session")
def paper_volume(client, paper_library, node_image) -> str:
    from shlib.collect.library import ensure_volume

    return ensure_volume(client, paper_library, node_image)


@pytest.fixture
def test_labels(request) -> dict[str, str]:
    """Labels for containers a test creates itself: shlib's own plus one naming the test."""
    import hashlib

    return {"shlib.managed": "true", "shlib.test": hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]}


@pytest.fixture
def no_leftovers(client, test_labels) -> Iterator[None]:
    """Fails the test if a container labelled with its ``test_labels`` survives it."""
    yield
    left = [c.name for c in shlib_containers(client, f"shlib.test={test_labels['shlib.test']}")]
    assert not left, f"containers left behind: {left}"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_at_the_end() -> Iterator[None]:
    """In CI (nothing else runs beside the suite) no shlib container may outlive the session."""
    yield
    if os.environ.get("CI") != "true":
        return
    from shlib.collect.engine import connect

    left = [c.name for c in shlib_containers(connect())]
    assert not left, f"the test session left shlib containers behind: {left}"
