#!/usr/bin/env bash
# Install (or upgrade) hailo-ocr as a systemd service.
#
#   sudo deploy/install.sh          # Raspberry Pi 5 + AI HAT+ 2: the NPU backend
#   sudo deploy/install.sh --cpu    # any Linux machine: the CPU backend
#
# What it does (each step is safe to repeat; an existing configuration is never
# overwritten):
#   1. a system user "hailo-ocr" with no login and no home outside /var/lib/hailo-ocr;
#   2. a venv in /opt/hailo-ocr/venv with this checkout installed (on the NPU host the
#      venv sees the system site-packages, where Hailo's Debian packages put hailo_platform);
#   3. /etc/hailo-ocr/config.yaml from deploy/pi-config.yaml with a fresh random token
#      (mode 0640, group hailo-ocr), /var/lib/hailo-ocr/models for the HEF files;
#   4. the unit (and with --cpu its CPU drop-in), enabled and started;
#   5. waits until /health/ready answers and prints how to call the service.
set -euo pipefail

PREFIX=/opt/hailo-ocr
ETC=/etc/hailo-ocr
STATE=/var/lib/hailo-ocr
UNIT_DIR=/etc/systemd/system
SERVICE_USER=hailo-ocr
SRC="$(cd "$(dirname "$0")/.." && pwd)"
CPU=0

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) CPU=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
command -v systemctl >/dev/null || { echo "systemd is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required (apt install python3-venv)" >&2; exit 1; }

say "user $SERVICE_USER"
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin \
        --user-group "$SERVICE_USER"
fi

say "Python environment in $PREFIX/venv"
install -d -m 0755 "$PREFIX"
if [ "$CPU" = 1 ]; then
    [ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
else
    # Hailo's packages install hailo_platform for the system Python: let the venv see it.
    [ -x "$PREFIX/venv/bin/python" ] || python3 -m venv --system-site-packages "$PREFIX/venv"
fi
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/venv/bin/pip" install --quiet --upgrade "$SRC"
install -m 0644 "$SRC/README.md" "$PREFIX/README.md"

say "directories"
install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC"
install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE"
install -d -m 0755 -o root -g root "$STATE/models"
install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" /var/log/hailo-ocr

if [ ! -e "$ETC/config.yaml" ]; then
    say "configuration $ETC/config.yaml (with a new random token)"
    TOKEN="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    sed "s|auth_token: CHANGE-ME-install-sh-generates-one|auth_token: \"$TOKEN\"|" \
        "$SRC/deploy/pi-config.yaml" > "$ETC/config.yaml.new"
    chown root:"$SERVICE_USER" "$ETC/config.yaml.new"
    chmod 0640 "$ETC/config.yaml.new"
    mv "$ETC/config.yaml.new" "$ETC/config.yaml"
    NEW_TOKEN="$TOKEN"
else
    say "keeping the existing $ETC/config.yaml"
    NEW_TOKEN=""
fi

if [ "$CPU" = 0 ]; then
    say "checking the NPU"
    [ -e /dev/hailo0 ] || warn "/dev/hailo0 is missing: install Hailo's driver and reboot \
(README: Deploying on a Raspberry Pi 5 with the AI HAT+ 2), or use --cpu"
    "$PREFIX/venv/bin/python" -c 'import hailo_platform' 2>/dev/null \
        || warn "hailo_platform cannot be imported: install Hailo's packages (hailo-h10-all)"
    for hef in ocr_det.hef ocr.hef; do
        [ -e "$STATE/models/$hef" ] || warn "$STATE/models/$hef is missing: copy the HEF files there"
    done
fi

say "systemd unit"
install -m 0644 "$SRC/deploy/hailo-ocr.service" "$UNIT_DIR/hailo-ocr.service"
if [ "$CPU" = 1 ]; then
    install -D -m 0644 "$SRC/deploy/hailo-ocr.service.d/cpu.conf" \
        "$UNIT_DIR/hailo-ocr.service.d/cpu.conf"
else
    rm -f "$UNIT_DIR/hailo-ocr.service.d/cpu.conf"
fi
systemctl daemon-reload
systemctl enable hailo-ocr.service >/dev/null
systemctl restart hailo-ocr.service

say "waiting for the service to be ready"
PORT="$("$PREFIX/venv/bin/hailo-ocr" config --print --config "$ETC/config.yaml" 2>/dev/null \
    | awk '/^server:/{s=1;next} /^[^ ]/{s=0} s && $1=="port:"{print $2; exit}')"
PORT="${PORT:-11436}"
for _ in $(seq 1 60); do
    if python3 - "$PORT" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health/ready", timeout=2)
PY
        say "hailo-ocr is ready on port $PORT"
        if [ -n "$NEW_TOKEN" ]; then
            echo "Access token (also in $ETC/config.yaml): $NEW_TOKEN"
        fi
        echo "Try: curl -s localhost:$PORT/health"
        echo "Web page: http://$(hostname -f 2>/dev/null || hostname):$PORT/"
        exit 0
    fi
    sleep 2
done
warn "not ready after 120 s; see: journalctl -u hailo-ocr -n 50"
exit 1
