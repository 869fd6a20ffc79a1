#!/usr/bin/env bash
# make docker-check: build the serving image and run it, alone and through docker-compose, on a
# machine without Docker Hub, and check what a user relies on. Needs root (or sudo) and apt.
#
# 1. Debian's docker.io (20.10, with BuildKit), docker-compose (1.29) and debootstrap.
# 2. A private dockerd: its own data root, sockets and PID file; no iptables rules.
# 3. The Python base image: a minimal Debian bookworm root with python3, made by debootstrap
#    from this machine's apt mirror and imported, with this machine's CA certificates and pip
#    index settings, so that pip in the build reaches the index this machine's pip does.
# 4. The image, built with Debian's docker CLI and BuildKit, on that base.
# 5. `docker run` as docker-compose.yml runs it, then `docker-compose up` (the service behind
#    its nginx front door, which runs Debian's nginx here), each checked: /health 200 with
#    the committed model's (and experiment head's) version, a prediction with its experiment
#    object, a 422, uid 10001, a read-only root, "healthy", the hostile clients of
#    bench/hostile.py (300 held connections, oversized headers and error bodies), and a clean
#    stop within the grace period; then a run with no writable place at all (no tmpfs), which
#    must refuse to start in one line.
# Everything is removed at the end, whatever happened: containers, the daemon, its bridges.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SUITE=bookworm
IMAGE=magorder:check
BASE_IMAGE=magorder-base:$SUITE
NGINX_IMAGE=magorder-nginx:check
CONTAINER=magorder-check
PROJECT=magorderchk
STOP_GRACE_S=30 # docker-compose.yml's stop_grace_period
DOCKER=/usr/bin/docker # Debian's 20.10 CLI: a newer one refuses BuildKit without buildx
COMPOSE=/usr/bin/docker-compose
STARTED=$(date +%s.%N)

if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=PATH "$0" "$@"
fi

since() { awk -v now="$(date +%s.%N)" -v then="$1" 'BEGIN { printf "%.1f", now - then }'; }
step() { printf '[%6s s] %s\n' "$(since "$STARTED")" "$*"; }
fail() {
  echo "docker-check FAILED: $*" >&2
  exit 1
}

WORK=$(mktemp -d /tmp/magorder-docker.XXXXXX)
export DOCKER_HOST="unix://$WORK/docker.sock"
CURRENT_LOG="" # what to show when a check fails

cleanup() {
  status=$?
  set +e
  if [ "$status" -ne 0 ] && [ -n "$CURRENT_LOG" ]; then
    echo "---- $CURRENT_LOG (last 60 lines) ----" >&2
    eval "$CURRENT_LOG" 2>&1 | tail -n 60 >&2
    echo "----" >&2
  fi
  if [ -S "$WORK/docker.sock" ]; then
    MAGORDER_PORT=0 "$COMPOSE" -p "$PROJECT" down --volumes --timeout 5 >/dev/null 2>&1
    "$DOCKER" rm --force "$CONTAINER" >/dev/null 2>&1
  fi
  if [ -f "$WORK/dockerd.pid" ]; then
    pid=$(cat "$WORK/dockerd.pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
  fi
  # dockerd leaves its default bridge behind, and mounts if it died hard.
  ip link delete docker0 >/dev/null 2>&1
  grep -o " ${WORK}[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$WORK"
  if [ "$status" -eq 0 ]; then step "cleaned up"; else echo "cleaned up after failure" >&2; fi
}
trap cleanup EXIT
trap 'echo "docker-check FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

json_field() { # json_field FIELD: read a JSON object on stdin and print one of its fields
  python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

step "installing docker.io, docker-compose and debootstrap (Debian packages)"
packages="docker.io docker-compose debootstrap iproute2 curl"
if ! [ -x "$DOCKER" ] || ! [ -x "$COMPOSE" ] || ! command -v debootstrap >/dev/null \
  || ! command -v ip >/dev/null || ! command -v curl >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086 # a list of package names
  apt-get install -y --no-install-recommends $packages >"$WORK/apt.log" 2>&1 \
    || { apt-get update >>"$WORK/apt.log" 2>&1 \
      && apt-get install -y --no-install-recommends $packages >>"$WORK/apt.log" 2>&1; } \
    || { tail -n 30 "$WORK/apt.log" >&2; fail "apt-get install $packages"; }
fi

step "starting a private dockerd"
/usr/sbin/dockerd --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
  --host "$DOCKER_HOST" --iptables=false --ip6tables=false --storage-driver=overlay2 \
  >"$WORK/dockerd.log" 2>&1 &
CURRENT_LOG="cat $WORK/dockerd.log"
for _ in $(seq 1 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
"$DOCKER" info >/dev/null 2>&1 || fail "dockerd did not start"

MIRROR=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | grep -oE '^(deb|URIs:) +https?://[^ ]+' | grep -v security | head -n 1 | awk '{print $NF}' || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
step "building the Python base: debootstrap $SUITE from $MIRROR"
CURRENT_LOG="cat $WORK/debootstrap.log"
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || fail "debootstrap"
# This machine's CA bundle (it may hold a proxy's CA) and its pip index settings, minus local
# paths (file:// indexes, find-links) and constraints that exist only here.
cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
python3 - "$WORK/rootfs/etc/pip.conf" <<'EOF'
import configparser, subprocess, sys
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                        text=True, check=False).stdout.splitlines()
settings = {"cert": "/etc/ssl/certs/ca-certificates.crt", "timeout": "180"}
for line in listed:
    key, _, value = line.partition("=")
    name, value = key.rsplit(".", 1)[-1], value.strip("'\"")
    if name in ("index-url", "extra-index-url", "trusted-host"):
        kept = " ".join(part for part in value.split() if not part.startswith("file:"))
        if kept:
            settings[name] = kept
config = configparser.ConfigParser()
config["global"] = settings
with open(sys.argv[1], "w") as out:
    config.write(out)
EOF
tar -C "$WORK/rootfs" -c . | "$DOCKER" import - "$BASE_IMAGE" >/dev/null
rm -rf "$WORK/rootfs"
step "base image $BASE_IMAGE: $("$DOCKER" run --rm "$BASE_IMAGE" python --version)"

# The compose stack's front door is nginx. Docker Hub's image cannot be pulled here, so
# docker-compose runs the same configuration on Debian's nginx, in an image built on the base.
step "building $NGINX_IMAGE (Debian's nginx, for the compose stack's front door)"
CURRENT_LOG="cat $WORK/nginx-build.log"
printf 'FROM %s\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx && rm -rf /var/lib/apt/lists/*\n' \
  "$BASE_IMAGE" | DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain \
  --tag "$NGINX_IMAGE" - >"$WORK/nginx-build.log" 2>&1 || fail "docker build $NGINX_IMAGE"
export MAGORDER_NGINX_IMAGE=$NGINX_IMAGE

step "building $IMAGE (BuildKit, base $BASE_IMAGE)"
CURRENT_LOG="cat $WORK/build.log"
DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain \
  --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --tag "$IMAGE" --tag magorder:latest . \
  >"$WORK/build.log" 2>&1 || fail "docker build"
SIZE_MB=$(( $("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE") / 1000000 ))
step "built $IMAGE: ${SIZE_MB} MB"

MODEL_VERSION=$(json_field model_version <artifacts/model/metadata.json)
EXPERIMENT_VERSION=$(json_field model_version <artifacts/model/experiment/metadata.json)
DENSITY_VERSION=$(json_field model_version <artifacts/model/density/metadata.json)
# A rock-salt NiO cell, to upload as a crystal structure file.
cat >"$WORK/NiO.cif" <<'CIF'
data_NiO
_symmetry_space_group_name_H-M   'P 1'
_cell_length_a   2.95
_cell_length_b   2.95
_cell_length_c   2.95
_cell_angle_alpha   60
_cell_angle_beta   60
_cell_angle_gamma   60
loop_
 _atom_site_type_symbol
 _atom_site_label
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
  Ni  Ni0  0.0  0.0  0.0  1
  O  O1  0.5  0.5  0.5  1
CIF

check_service() { # check_service CONTAINER PORT
  local container=$1 url="http://127.0.0.1:$2" body code
  for _ in $(seq 1 120); do
    body=$(curl -sf "$url/health" 2>/dev/null) && break
    [ "$("$DOCKER" inspect --format '{{.State.Running}}' "$container")" = true ] \
      || fail "$container exited before /health answered"
    sleep 1
  done
  [ -n "${body:-}" ] || fail "/health did not answer 200 within 120 s"
  [ "$(echo "$body" | json_field model_version)" = "$MODEL_VERSION" ] \
    || fail "/health reports $body, not model $MODEL_VERSION"
  [ "$(echo "$body" | json_field experiment_model_version)" = "$EXPERIMENT_VERSION" ] \
    || fail "/health reports $body, not experiment head $EXPERIMENT_VERSION"
  [ "$(echo "$body" | json_field density_model_version)" = "$DENSITY_VERSION" ] \
    || fail "/health reports $body, not density estimator $DENSITY_VERSION"
  step "  /health 200, model $MODEL_VERSION, experiment head $EXPERIMENT_VERSION, density $DENSITY_VERSION"
  body=$(curl -sf "$url/predict" -H 'Content-Type: application/json' \
    -d '{"formula": "CaTiO3", "density": 4.04}') || fail "POST /predict did not answer 200"
  echo "$body" | python3 -c '
import json, sys
answer = json.load(sys.stdin)
assert answer["prediction"] in {"FM", "NM", "FiM", "AFM"}, answer
assert abs(sum(answer["probabilities"].values()) - 1) < 1e-4, answer
experiment = answer["experiment"]
assert experiment["prediction"] in {"FM", "AFM", "NM"}, answer
assert abs(sum(experiment["probabilities"].values()) - 1) < 1e-4, answer
assert experiment["ordering_temperature"]["kelvin"] > 0, answer
' || fail "POST /predict answered $body"
  step "  POST /predict CaTiO3: $(echo "$body" | json_field prediction)"
  code=$(curl -s -o "$WORK/422.json" -w '%{http_code}' "$url/predict" \
    -H 'Content-Type: application/json' -d '{"formula": "Qq2", "density": 3.0}')
  if [ "$code" != 422 ] || ! grep -q invalid_formula "$WORK/422.json"; then
    fail "a bad formula got $code: $(cat "$WORK/422.json")"
  fi
  step "  POST /predict Qq2: 422 invalid_formula"
  body=$(curl -sf "$url/predict" -H 'Content-Type: application/json' -d '{"formula": "NiO"}') \
    || fail "POST /predict without a density did not answer 200"
  [ "$(echo "$body" | json_field density_source)" = estimated ] \
    || fail "POST /predict without a density answered $body"
  step "  POST /predict NiO without density: estimated $(echo "$body" | json_field density) g/cm3"
  body=$(curl -sf "$url/predict/structure" -F "file=@$WORK/NiO.cif") \
    || fail "POST /predict/structure with an uploaded CIF did not answer 200"
  [ "$(echo "$body" | json_field reduced_formula)" = NiO ] \
    || fail "POST /predict/structure answered $body"
  step "  POST /predict/structure NiO.cif: $(echo "$body" | json_field prediction)"
  code=$(curl -s -o "$WORK/page.html" -w '%{http_code}' "$url/")
  { [ "$code" = 200 ] && grep -q '/static/app.js' "$WORK/page.html" \
    && [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/static/app.js")" = 200 ] \
    && [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/model/per_class_f1.png")" = 200 ]; } \
    || fail "the web page, its script or a card plot did not answer 200 (page: $code)"
  step "  GET /, its script and a card plot: 200"
  [ "$("$DOCKER" exec "$container" id -u)" = 10001 ] || fail "the service does not run as uid 10001"
  [ "$("$DOCKER" inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$container")" = true ] \
    || fail "the root filesystem is writable"
  if "$DOCKER" exec "$container" touch /srv/magorder/written 2>/dev/null; then
    fail "the container could write to its root filesystem"
  fi
  step "  uid 10001, read-only root"
  local health=""
  for _ in $(seq 1 90); do
    health=$("$DOCKER" inspect --format '{{.State.Health.Status}}' "$container")
    [ "$health" = healthy ] && break
    sleep 1
  done
  [ "$health" = healthy ] || fail "container health is '$health' after 90 s"
  step "  healthy"
}

check_hostile_clients() { # check_hostile_clients PORT: bench/hostile.py, host Python, stdlib only
  python3 -m bench.hostile "http://127.0.0.1:$1" >"$WORK/hostile.log" 2>&1 \
    || { cat "$WORK/hostile.log" >&2; fail "the hostile clients got through (above)"; }
  grep '^| [^h-]' "$WORK/hostile.log" | while IFS= read -r row; do step "  $row"; done
}

check_clean_stop() { # check_clean_stop CONTAINER SECONDS_TAKEN
  local container=$1 took=$2 exit_code
  exit_code=$("$DOCKER" inspect --format '{{.State.ExitCode}}' "$container")
  [ "$exit_code" = 0 ] || fail "$container exited with status $exit_code on SIGTERM"
  awk -v took="$took" -v grace="$STOP_GRACE_S" 'BEGIN { exit !(took < grace) }' \
    || fail "stopping took $took s (grace $STOP_GRACE_S s)"
  step "  stopped cleanly (exit 0) in $took s"
}

PORT=$(free_port)
step "docker run $IMAGE (read-only root, tmpfs /tmp, no-new-privileges) on port $PORT"
CURRENT_LOG="$DOCKER logs $CONTAINER"
"$DOCKER" run --detach --name "$CONTAINER" --read-only --tmpfs /tmp \
  --security-opt no-new-privileges:true --publish "127.0.0.1:$PORT:8000" "$IMAGE" >/dev/null
check_service "$CONTAINER" "$PORT"
check_hostile_clients "$PORT"
if "$DOCKER" logs "$CONTAINER" 2>&1 | grep -E 'mkdir -p failed|cuInit|Traceback'; then
  fail "the service's start-up log has the lines above"
fi
before=$(date +%s.%N)
"$DOCKER" stop --time "$STOP_GRACE_S" "$CONTAINER" >/dev/null
check_clean_stop "$CONTAINER" "$(since "$before")"
"$DOCKER" rm "$CONTAINER" >/dev/null

# Read-only everywhere, not even a tmpfs: TensorFlow cannot be imported without a writable
# temporary directory, so the service must refuse in one line, not die in a traceback.
step "docker run $IMAGE read-only without any tmpfs: a one-line refusal"
CURRENT_LOG="$DOCKER logs $CONTAINER-no-tmp"
"$DOCKER" run --detach --name "$CONTAINER-no-tmp" --read-only "$IMAGE" >/dev/null
for _ in $(seq 1 60); do
  [ "$("$DOCKER" inspect --format '{{.State.Running}}' "$CONTAINER-no-tmp")" = true ] || break
  sleep 1
done
refusal=$("$DOCKER" logs "$CONTAINER-no-tmp" 2>&1)
if ! echo "$refusal" | grep -q 'refusing to start: no writable temporary directory' \
  || echo "$refusal" | grep -q Traceback; then
  echo "$refusal" >&2
  fail "without a writable /tmp the service did not refuse in one line"
fi
step "  $(echo "$refusal" | grep -o 'refusing to start: no writable temporary directory[^(]*')"
"$DOCKER" rm --force "$CONTAINER-no-tmp" >/dev/null

PORT=$(free_port)
export MAGORDER_PORT=$PORT
step "docker-compose up (the project's docker-compose.yml) on port $PORT"
CURRENT_LOG="$COMPOSE -p $PROJECT logs --no-color"
"$COMPOSE" -p "$PROJECT" up --detach --no-build >"$WORK/compose.log" 2>&1 \
  || { cat "$WORK/compose.log" >&2; fail "docker-compose up"; }
SERVICE=$("$COMPOSE" -p "$PROJECT" ps --quiet magorder)
FRONTDOOR=$("$COMPOSE" -p "$PROJECT" ps --quiet frontdoor)
check_service "$SERVICE" "$PORT"
[ "$("$DOCKER" exec "$FRONTDOOR" id -u)" = 101 ] || fail "the front door does not run as uid 101"
[ "$("$DOCKER" inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$FRONTDOOR")" = true ] \
  || fail "the front door's root filesystem is writable"
[ -z "$("$DOCKER" port "$SERVICE")" ] || fail "the service publishes a port past its front door"
step "  front door (nginx): uid 101, read-only root; the service publishes no port of its own"
check_hostile_clients "$PORT"
before=$(date +%s.%N)
"$COMPOSE" -p "$PROJECT" stop >/dev/null 2>&1
took=$(since "$before")
check_clean_stop "$SERVICE" "$took"
check_clean_stop "$FRONTDOOR" "$took"
"$COMPOSE" -p "$PROJECT" down --volumes >/dev/null 2>&1
CURRENT_LOG=""
step "docker-check passed: image $SIZE_MB MB"
