#!/usr/bin/env bash
# Podman as a second engine for shlib, as root, idempotently:
#   installs podman from the distribution (Podman 4.3 on Debian 12), writes shlib's own
#   containers.conf registering crun, runc and every runsc runtime of the Docker engine
#   (runsc through a wrapper adding its flags: Podman's API takes no runtime flags, and runsc
#   needs --network=none here), and starts `podman system service` on its own socket.
# The system's /etc/containers is never touched: the service reads $conf through CONTAINERS_CONF.
# Then: shlib run --engine unix:///run/shlib-podman.sock ...
set -euo pipefail

state=${SHLIB_PODMAN_STATE:-/var/lib/shlib/podman}
socket=${SHLIB_PODMAN_SOCKET:-/run/shlib-podman.sock}
daemon_json=${SHLIB_DAEMON_JSON:-/etc/docker/daemon.json}
log=${SHLIB_PODMAN_LOG:-/var/log/shlib-podman.log}
conf=$state/containers.conf
wrappers=$state/bin
python=${PYTHON:-python3}

say() { printf 'shlib podman: %s\n' "$*"; }
die() { printf 'shlib podman: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs podman and starts its service)"

# 1. The package, only when missing.
if ! command -v podman >/dev/null; then
  command -v apt-get >/dev/null || die "this script knows Debian/Ubuntu (apt-get); install podman by hand"
  say "installing podman"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends podman >/dev/null
fi
say "$(podman --version)"

# 2. Runtimes: crun and runc as they are, each runsc of the Docker engine through a wrapper with its flags.
#    kvm platforms are left out: they hang on hosts without hardware virtualisation.
mkdir -p "$wrappers"
runtimes=$("$python" - "$daemon_json" "$wrappers" <<'EOF'
import json, os, shlex, shutil, sys
daemon_json, wrappers = sys.argv[1], sys.argv[2]
lines = []
for name in ("crun", "runc"):
    found = shutil.which(name)
    if found:
        lines.append(f'{name} = ["{found}"]')
try:
    runtimes = json.load(open(daemon_json)).get("runtimes", {})
except (OSError, ValueError):
    runtimes = {}
for name, spec in sorted(runtimes.items()):
    path, args = spec.get("path", ""), list(spec.get("runtimeArgs") or [])
    if "runsc" not in os.path.basename(path) or "--platform=kvm" in args or not os.path.exists(path):
        continue
    if not any(a.startswith("--network=") for a in args):
        args.insert(0, "--network=none")
    wrapper = os.path.join(wrappers, name)
    text = f"#!/bin/sh\nexec {shlex.quote(path)} {' '.join(map(shlex.quote, args))} \"$@\"\n"
    if not os.path.exists(wrapper) or open(wrapper).read() != text:
        with open(wrapper, "w") as fh:
            fh.write(text)
        os.chmod(wrapper, 0o755)
    lines.append(f'"{name}" = ["{wrapper}"]')
print("\n".join(lines))
EOF
)
new_conf=$(printf '# Written by shlib scripts/setup-podman.sh; read through CONTAINERS_CONF.\n[containers]\nnetns = "none"\n\n[engine]\nruntime = "crun"\n\n[engine.runtimes]\n%s\n' "$runtimes")
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$new_conf" ]; then
  printf '%s\n' "$new_conf" > "$conf"
  say "runtimes written to $conf: $(printf '%s\n' "$runtimes" | sed 's/ =.*//' | tr -d '"' | tr '\n' ' ')"
  restart=1
else
  say "runtimes in $conf unchanged"
  restart=0
fi

# 3. The API service on its own socket, in the background (restarted when the runtimes changed).
pidfile=$state/service.pid
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
if running && [ "$restart" = 1 ]; then
  say "restarting the service to read the new runtimes"
  kill "$(cat "$pidfile")"; sleep 1
fi
if ! running; then
  rm -f "$socket"
  CONTAINERS_CONF=$conf nohup podman system service --time=0 "unix://$socket" >>"$log" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 1 50); do [ -S "$socket" ] && break; sleep 0.2; done
  [ -S "$socket" ] || die "podman system service did not create $socket (see $log)"
  say "service started (pid $(cat "$pidfile")), socket $socket, log $log"
else
  say "service already running (pid $(cat "$pidfile")) on $socket"
fi
say "use it with: shlib run --engine unix://$socket ..."
