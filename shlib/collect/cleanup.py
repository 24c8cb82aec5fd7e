"""Remove what shlib created, found by its label, and nothing else."""

from __future__ import annotations

import docker
import docker.errors

from shlib.collect.docker_batch import reap_runtime
from shlib.collect.engine import LABEL


def clean_all(client: docker.DockerClient, dry_run: bool = False, images: bool = True,
              run_id: str | None = None) -> dict[str, list[str]]:
    """Remove shlib's containers (of ``run_id`` only, if given), volumes and images."""
    label = f"shlib.run_id={run_id}" if run_id else LABEL
    removed: dict[str, list[str]] = {"containers": [], "volumes": [], "images": []}
    # sparse: a full list inspects each container and fails if one goes away meanwhile (a run removing its own)
    for c in client.containers.list(all=True, sparse=True, filters={"label": label}):
        removed["containers"].append(_name(c))
        if not dry_run:
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                reap_runtime(c.id)
                c.remove(force=True)
    if run_id:
        return removed
    for v in client.volumes.list(filters={"label": LABEL}):
        removed["volumes"].append(v.name)
        if not dry_run:
            v.remove(force=True)
    if images:
        for img in client.images.list(filters={"label": LABEL}):
            removed["images"].append(",".join(img.tags) or img.short_id)
            if not dry_run:
                try:
                    client.images.remove(img.id, force=True)
                except docker.errors.NotFound:
                    pass
    return removed


def _name(container: docker.models.containers.Container) -> str:
    names = container.attrs.get("Names") or []
    return names[0].lstrip("/") if names else (container.name or container.short_id)
