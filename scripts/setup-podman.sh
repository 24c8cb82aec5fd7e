#!/usr/bin/env bash
# Podman as a second engine for shlib, as root, idempotently:
#   installs podman from the distribution (Podman 4.3 on Debian 12), writes shlib's own
#   containers.conf registering crun, runc and every runsc runtime of the Docker engine
#   (runsc through a wrapper adding its flags: Podman's API takes no runtime flags, and runsc
#   needs --network=none here), and starts `podman system service` on its own socket.
# Podman's API (compat and libpod, 4.3) cannot choose the OCI runtime per container: a service
# runs every container under its own --runtime. So one service runs per runtime, all on the same
# storage (images, volumes): crun (the default) on $socket, each other one on $socket.d/NAME.sock,
# where shlib finds them. By default runc and the gVisor builds/platforms (not the setting
# variants); SHLIB_PODMAN_RUNTIMES="runc runsc-..." chooses.
# The system's /etc/containers is never touched: the services read $conf through CONTAINERS_CONF.
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
lines, served = [], []
for name in ("crun", "runc"):
    found = shutil.which(name)
    if found:
        lines.append(f'{name} = ["{found}"]')
        if name == "runc":
            served.append(name)
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
    if all(a.startswith(("--network=", "--platform=")) for a in args):
        served.append(name)
print("\n".join(lines))
print("# served: " + " ".join(served))
EOF
)
served=${SHLIB_PODMAN_RUNTIMES:-$(printf '%s\n' "$runtimes" | sed -n 's/^# served: //p')}
runtimes=$(printf '%s\n' "$runtimes" | grep -v '^# served:')
new_conf=$(printf '# Written by shlib scripts/setup-podman.sh; read through CONTAINERS_CONF.\n[containers]\nnetns = "none"\n\n[engine]\nruntime = "crun"\n\n[engine.runtimes]\n%s\n' "$runtimes")
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$new_conf" ]; then
  printf '%s\n' "$new_conf" > "$conf"
  say "runtimes written to $conf: $(printf '%s\n' "$runtimes" | sed 's/ =.*//' | tr -d '"' | tr '\n' ' ')"
  restart=1
else
  say "runtimes in $conf unchanged"
  restart=0
fi

# 3. The API services in the background: crun (the default) on $socket, each served runtime on
#    $socket.d/NAME.sock; all restarted when the runtimes changed.
mkdir -p "$state/pids" "$socket.d"
start_service() {  # name socket [runtime]
  local name=$1 sock=$2 runtime=${3:-} pidfile=$state/pids/$1.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    if [ "$restart" = 1 ]; then kill "$(cat "$pidfile")"; sleep 0.5; else return 0; fi
  fi
  rm -f "$sock"
  CONTAINERS_CONF=$conf nohup podman ${runtime:+--runtime "$runtime"} system service --time=0 "unix://$sock" \
    >>"$log" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 1 50); do [ -S "$sock" ] && break; sleep 0.2; done
  [ -S "$sock" ] || die "podman system service ($name) did not create $sock (see $log)"
  say "service $name started (pid $(cat "$pidfile")) on $sock"
}
start_service default "$socket"
for name in $served; do
  start_service "$name" "$socket.d/$name.sock" "$name"
done
for old in "$socket.d"/*.sock; do  # a runtime no longer served
  [ -e "$old" ] || continue
  name=$(basename "$old" .sock)
  case " $served " in *" $name "*) ;; *)
    [ -f "$state/pids/$name.pid" ] && kill "$(cat "$state/pids/$name.pid")" 2>/dev/null || true
    rm -f "$old" "$state/pids/$name.pid"; say "service $name stopped (no longer served)";;
  esac
done
say "runtimes served: crun (default) $served"
say "use it with: shlib run --engine unix://$socket ..."
