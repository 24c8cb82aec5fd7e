#!/usr/bin/env bash
# Set up a Debian/Ubuntu host for shlib, as root, idempotently:
#   the Docker engine, gVisor (the distribution's runsc and a newer build side by side),
#   crun, every runtime registered with the engine, dockerd running.
# A second run changes nothing. Set SHLIB_SKIP_TRIXIE_RUNSC=1 to skip the newer gVisor.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${SHLIB_PREFIX:-/opt/shlib}
state=${SHLIB_STATE:-/var/lib/shlib}
daemon_json=${SHLIB_DAEMON_JSON:-/etc/docker/daemon.json}
log=${SHLIB_DOCKERD_LOG:-/var/log/shlib-dockerd.log}
python=${PYTHON:-python3}

say() { printf 'shlib setup: %s\n' "$*"; }
die() { printf 'shlib setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts dockerd)"
command -v apt-get >/dev/null || die "this script knows Debian/Ubuntu (apt-get); install docker, runsc and crun by hand"

# 1. Distribution packages, only what is missing.
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
[ -x /usr/bin/runsc ] || missing+=(runsc)
command -v crun >/dev/null || missing+=(crun)
command -v strace >/dev/null || missing+=(strace)  # each module's syscall profile (shlib.collect.syscalls)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
else
  say "docker.io, runsc, crun and strace already installed"
fi

# 2. The newer gVisor from Debian trixie, through a private apt configuration:
#    the system's sources are never touched.
trixie_runsc=""
if [ "${SHLIB_SKIP_TRIXIE_RUNSC:-0}" != 1 ]; then
  found=$(ls -d "$prefix"/runsc-*/usr/bin/runsc 2>/dev/null | sort | tail -n 1 || true)
  if [ -n "$found" ]; then
    trixie_runsc=$found
    say "newer gVisor already at $trixie_runsc"
  else
    mirror=$(grep -hoE '^(URIs:|deb)\s+\S+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
             | awk '{print $2}' | grep -E '/debian/?$' | head -n 1 || true)
    [ -n "$mirror" ] || die "no Debian mirror found in the system's apt sources; set SHLIB_SKIP_TRIXIE_RUNSC=1 to skip the newer gVisor"
    apt_dir=$state/apt
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/download"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
              -o "Dir::Cache::pkgcache=$apt_dir/pkgcache.bin" -o "Dir::Cache::srcpkgcache=$apt_dir/srcpkgcache.bin"
              -o "APT::Architecture=$(dpkg --print-architecture)" -o "APT::Sandbox::User=root")
    say "fetching runsc from Debian trixie ($mirror) with a private apt configuration"
    apt-get "${apt_opts[@]}" update -q >/dev/null
    (cd "$apt_dir/download" && rm -f runsc_*.deb && apt-get "${apt_opts[@]}" download runsc >/dev/null)
    deb=$(ls "$apt_dir"/download/runsc_*.deb | head -n 1)
    version=$(dpkg-deb -f "$deb" Version)
    dest=$prefix/runsc-$version
    mkdir -p "$dest"
    dpkg -x "$deb" "$dest"
    trixie_runsc=$dest/usr/bin/runsc
    say "newer gVisor $version unpacked to $trixie_runsc"
  fi
fi

# 3. crun on hosts with cgroup v1 controllers plus a cgroup2 hierarchy holding only hugetlb:
#    crun refuses that "hybrid" layout; giving hugetlb its own v1 hierarchy empties cgroup2.
unified=/sys/fs/cgroup/unified
if [ -f "$unified/cgroup.controllers" ] && [ "$(tr -d '\n' < "$unified/cgroup.controllers")" = hugetlb ] \
   && [ ! -d /sys/fs/cgroup/hugetlb ]; then
  say "cgroup2 at $unified holds only hugetlb (crun refuses this hybrid layout): mounting hugetlb as its own v1 hierarchy"
  mkdir -p /sys/fs/cgroup/hugetlb
  mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
fi

# 4. Register the runtimes with the engine (merging, with a backup, never clobbering).
register_args=(--daemon-json "$daemon_json" --system-runsc /usr/bin/runsc --crun "$(command -v crun)" --switch-variants)
[ -n "$trixie_runsc" ] && register_args+=(--extra-runsc "$trixie_runsc")
# Kata, where installed: one runtime per shared_fs / virtio_fs_cache variant, each with its own
# configuration.toml derived from the host's (docs/kata.md).
for kata_config in /etc/kata-containers/configuration.toml /opt/kata/share/defaults/kata-containers/configuration.toml \
                   /usr/share/defaults/kata-containers/configuration.toml; do
  if [ -f "$kata_config" ]; then
    kata_major=$( (kata-runtime --version 2>/dev/null || true) | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1 | cut -d. -f1)
    say "Kata found ($kata_config): registering its shared_fs / virtio_fs_cache variants"
    register_args+=(--kata-config "$kata_config" --kata-dir "$prefix/kata" --kata-major "${kata_major:-3}")
    break
  fi
done
changed=$(PYTHONPATH="$repo" "$python" -m shlib.collect.daemon_json "${register_args[@]}")
say "$changed"

# 5. Start dockerd (or restart it when its configuration changed) and wait for the socket.
engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
# A dockerd or containerd that was killed leaves its pid file behind; when the process it
# names is gone (or a zombie), the file only stops the new daemon from starting.
clear_stale_pidfile() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  if [ -z "$pid" ] || ! [ -e "/proc/$pid" ] || grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
    say "removing stale pid file $file"
    rm -f "$file"
  fi
}
start_dockerd() {
  clear_stale_pidfile /var/run/docker.pid
  clear_stale_pidfile /var/run/docker/containerd/containerd.pid
  if command -v systemctl >/dev/null && [ "$(ps -p 1 -o comm=)" = systemd ]; then
    systemctl restart docker
  else
    say "starting dockerd in the background (log: $log)"
    nohup dockerd >>"$log" 2>&1 &
  fi
  for _ in $(seq 1 60); do engine_up && return 0; sleep 1; done
  echo "--- last lines of the dockerd log ($log) ---" >&2
  tail -n 30 "$log" >&2 || true
  die "dockerd did not answer on its socket within 60 s"
}
if engine_up; then
  if [[ "$changed" == *"changed: added"* ]]; then
    say "runtime configuration changed: reloading dockerd"
    if pid=$(pidof dockerd); then kill -HUP "$pid"; sleep 1; fi
  fi
else
  start_dockerd
fi

# 6. Say what is there.
say "engine $(docker version --format '{{.Server.Version}}'), runtimes: $(docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}')"
