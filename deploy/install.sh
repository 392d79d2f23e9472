#!/usr/bin/env bash
# Install hailo-ocr as the systemd service "hailo-ocr", or upgrade it in place.
#
#   sudo deploy/install.sh            Raspberry Pi 5 + AI HAT+ 2 (Hailo-10H): the NPU
#   sudo deploy/install.sh --token    ... and require a bearer token on the API
#   sudo deploy/install.sh --cpu      any Linux machine: the CPU backend
#
# Options:
#   --token         generate a bearer token, keep it in /etc/hailo-ocr/env (mode 0600) and
#                   print it. Without it the API is open, as the original service's was.
#   --cpu           run on the CPU (ONNX Runtime): no HailoRT, HEF files or device needed
#   --hailo8        a Hailo-8/8L host (HailoRT 4.23): share the NPU through hailort.service
#                   (detected from the driver when the device is present)
#   --no-models     do not download the HEF files; the service runs on the CPU until
#                   `hailo-ocr models fetch` has put them in place
#   --models-url U  download the HEF files from U, a mirror of Hailo's resources URL
#   -h, --help      this text
#
# Over the original hailo-ocr (gregm123456/raspberry_pi_hailo_ai_services,
# system_services/hailo-ocr) it upgrades in place: the old unit is stopped and replaced,
# its venv rebuilt, and its configuration (/etc/hailo/hailo-ocr.yaml) and models
# (/var/lib/hailo-ocr/resources/models/hailo10h) are kept where they are and used. If the
# configuration does not load, the original is put back and started again.
#
# Each step is skipped when already done: a second run changes nothing (and does not
# restart the service) unless the source, the options or the host changed. It ends by
# waiting for the service to be ready (with the token, if one is set) and checking it
# with `hailo-ocr verify`. Exit status: 0 installed and verified, 1 failed, 2 usage.
#
# HAILO_OCR_ROOT=DIR installs below DIR instead of / (tests and image building; the
# service's own paths stay those of the real system).
set -euo pipefail

ROOT="${HAILO_OCR_ROOT:-}"
READY_TIMEOUT="${HAILO_OCR_READY_TIMEOUT:-120}"
SRC="$(cd "$(dirname "$0")/.." && pwd)"
UNIT=hailo-ocr.service
SERVICE_USER=hailo-ocr
PREFIX=/opt/hailo-ocr
VENV=$PREFIX/venv
ETC=/etc/hailo-ocr
ENV_FILE=$ETC/env
STATE=/var/lib/hailo-ocr
MODELS=$STATE/models
LOG_DIR=/var/log/hailo-ocr
UNIT_DIR=/etc/systemd/system
DROPINS=$UNIT_DIR/$UNIT.d
SYSFS=/sys/class/hailo_chardev
# The original service's files.
ORIG_SERVER=$PREFIX/hailo_ocr_server.py
ORIG_CONFIG=/etc/hailo/hailo-ocr.yaml
ORIG_JSON=/etc/xdg/hailo-ocr/hailo-ocr.json
ORIG_MODELS=$STATE/resources/models/hailo10h

CPU=0 TOKEN=0 HAILO8=0 FETCH=1 MODELS_URL=""
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) CPU=1 ;;
        --token) TOKEN=1 ;;
        --hailo8) HAILO8=1 ;;
        --no-models) FETCH=0 ;;
        --models-url) [ $# -ge 2 ] || { usage >&2; exit 2; }; MODELS_URL="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
r() { printf '%s%s' "$ROOT" "$1"; }    # a system path, below the install root
CHANGED=0                              # anything the running service would not see yet
UNITS_CHANGED=0

# install_if_changed SRC DEST MODE: copy when different; says whether it copied.
install_if_changed() {
    if cmp -s "$1" "$2"; then return 1; fi
    install -D -m "$3" "$1" "$2"
    return 0
}

[ "$(id -u)" = 0 ] || die "run as root (sudo $0)"
command -v systemctl >/dev/null || die "systemd is required"
command -v python3 >/dev/null || die "python3 is required (sudo apt install python3-venv)"
python3 -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' \
    || die "hailo-ocr needs Python 3.11 to 3.13; python3 is $(python3 -V 2>&1)"

# --- what is here ---------------------------------------------------------------------
ORIGINAL=0    # the original hailo-ocr is what is installed now
if grep -qs hailo_ocr_server.py "$(r $UNIT_DIR/$UNIT)" \
    || { [ -e "$(r $ORIG_SERVER)" ] && [ ! -e "$(r $PREFIX/.installed)" ]; }; then
    ORIGINAL=1
    say "found the original hailo-ocr: upgrading it in place"
fi
DEVICES=""
if [ -d "$(r $SYSFS)" ]; then
    for dev in "$(r $SYSFS)"/*; do
        [ -e "$dev" ] || continue
        DEVICES="$DEVICES ${dev##*/}"
        [ "$(cat "$dev/accelerator_type" 2>/dev/null)" = 0 ] && HAILO8=1
    done
fi
if [ "$CPU" = 0 ] && [ -z "$DEVICES" ]; then
    warn "no Hailo device found ($SYSFS is empty): install Hailo's driver (sudo apt install \
dkms hailo-h10-all) and reboot. The service runs on the CPU until the device is there."
fi

# --- user -----------------------------------------------------------------------------
say "user $SERVICE_USER"
getent group "$SERVICE_USER" >/dev/null || groupadd --system "$SERVICE_USER"
getent passwd "$SERVICE_USER" >/dev/null || useradd --system --gid "$SERVICE_USER" \
    --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
# join_group_of PATH WHAT: the service user joins the group of PATH (unless root's).
join_group_of() {
    local group members
    group="$(stat -c %G "$1" 2>/dev/null || true)"
    [ -n "$group" ] && [ "$group" != root ] || return 0
    members="$(getent group "$group" | cut -d: -f4)"
    case ",$members," in
        *",$SERVICE_USER,"*) ;;
        *)
            say "adding $SERVICE_USER to group $group, which may $2"
            usermod -aG "$group" "$SERVICE_USER" || warn "could not add $SERVICE_USER to $group"
            CHANGED=1 ;;
    esac
}
if [ "$CPU" = 0 ]; then
    # The node's group, if the udev rule restricts it (HailoRT status 36 otherwise).
    for dev in $DEVICES; do
        join_group_of "$(r /dev/"$dev")" "open /dev/$dev"
    done
    # hailo-device-manager (backend auto goes through it when its socket exists) gives its
    # socket, mode 0660, to HAILO_DEVICE_SOCKET_GROUP, else to /dev/hailo0's group.
    DM_SOCKET="$( (. "$(r /etc/hailo/device-manager.env)" 2>/dev/null || true
                   echo "${HAILO_DEVICE_SOCKET:-}") )"
    DM_SOCKET="${DM_SOCKET:-/run/hailo/device.sock}"
    if [ -S "$(r "$DM_SOCKET")" ]; then
        join_group_of "$(r "$DM_SOCKET")" "use hailo-device-manager's socket $DM_SOCKET"
    fi
fi

# --- the Python environment --------------------------------------------------------------
if [ "$ORIGINAL" = 1 ] && systemctl is-active --quiet "$UNIT"; then
    say "stopping the original service"
    systemctl stop "$UNIT"
fi
SITE=true; [ "$CPU" = 1 ] && SITE=false
if [ "$ORIGINAL" = 1 ] && [ -d "$(r $VENV)" ]; then
    # The original's venv (where hailo-apps' own "hailo-ocr" script lives): set aside
    # until the new one has proved it reads the configuration.
    rm -rf "$(r $VENV.original)"
    mv "$(r $VENV)" "$(r $VENV.original)"
fi
if ! grep -qs "^include-system-site-packages = $SITE" "$(r $VENV/pyvenv.cfg)"; then
    say "Python environment in $VENV"
    install -d -m 0755 "$(r $PREFIX)"
    if [ "$SITE" = true ]; then
        # Hailo's packages install hailo_platform for the system Python: let the venv see it.
        python3 -m venv --clear --system-site-packages "$(r $VENV)"
    else
        python3 -m venv --clear "$(r $VENV)"
    fi
    rm -f "$(r $PREFIX/.installed)"
fi
PY="$(r $VENV/bin/python)"

# HailoRT's bindings pin numpy (4.23: numpy<2; 5.x on Python < 3.13 too): keep to their pin.
CONSTRAINTS=""
if [ "$CPU" = 0 ]; then
    CONSTRAINTS="$("$PY" - <<'PY'
import importlib.metadata as md
import sys
try:
    dist = md.distribution("hailort")
except md.PackageNotFoundError:
    dist = None
if dist is not None and dist.requires:
    from pip._vendor.packaging.requirements import Requirement
    for line in dist.requires:
        req = Requirement(line)
        if req.name.lower() == "numpy" and (req.marker is None or req.marker.evaluate()):
            if str(req.specifier):
                print(f"numpy{req.specifier}")
            break
else:
    # No package metadata: the version decides, as HailoRT's setup.py does (4.23:
    # numpy<2; 5.x: numpy<2 below Python 3.13).
    try:
        version = dist.version if dist is not None else __import__("hailo_platform").__version__
    except Exception:
        raise SystemExit(0)
    if version.startswith("4.") or (version.startswith("5.") and sys.version_info < (3, 13)):
        print("numpy<2")
PY
)"
fi
if [ -n "$CONSTRAINTS" ]; then
    printf '%s\n' "$CONSTRAINTS" > "$(r $PREFIX/constraints.txt.new)"
    if install_if_changed "$(r $PREFIX/constraints.txt.new)" "$(r $PREFIX/constraints.txt)" 0644; then
        say "HailoRT's Python bindings require $CONSTRAINTS: the venv keeps to it"
    fi
    rm -f "$(r $PREFIX/constraints.txt.new)"
else
    rm -f "$(r $PREFIX/constraints.txt)"
fi

FINGERPRINT="$(python3 - "$SRC" "$SITE $CONSTRAINTS" <<'PY'
import hashlib, os, sys
src, extra = sys.argv[1], sys.argv[2]
h = hashlib.sha256(extra.encode())
files = []
for top in ("pyproject.toml", "README.md", "ocr", "npu", "actors", "web"):
    path = os.path.join(src, top)
    if os.path.isfile(path):
        files.append(path)
    for d, _, names in os.walk(path):
        files += [os.path.join(d, n) for n in names
                  if "__pycache__" not in d and not n.endswith(".pyc")]
for f in sorted(files):
    h.update(os.path.relpath(f, src).encode() + b"\0")
    with open(f, "rb") as fh:
        h.update(hashlib.sha256(fh.read()).digest())
print(h.hexdigest())
PY
)"
if [ "$(cat "$(r $PREFIX/.installed)" 2>/dev/null)" != "$FINGERPRINT" ]; then
    say "installing hailo-ocr from $SRC"
    "$(r $VENV/bin/pip)" install --quiet --upgrade pip
    if [ -n "$CONSTRAINTS" ]; then
        "$(r $VENV/bin/pip)" install --quiet --upgrade -c "$(r $PREFIX/constraints.txt)" "$SRC"
    else
        "$(r $VENV/bin/pip)" install --quiet --upgrade "$SRC"
    fi
    printf '%s\n' "$FINGERPRINT" > "$(r $PREFIX/.installed)"
    CHANGED=1
fi
if install_if_changed "$SRC/README.md" "$(r $PREFIX/README.md)" 0644; then :; fi
HAILO_OCR="$(r $VENV/bin/hailo-ocr)"

# --- directories and configuration ----------------------------------------------------------
install -d -m 0750 "$(r $ETC)" && chown "root:$SERVICE_USER" "$(r $ETC)"
# 0751: hailo-device-manager, as its own user, reads the HEFs below it when the service
# runs through it; nothing below it can be listed by others.
install -d -m 0751 "$(r $STATE)" && chown "$SERVICE_USER:$SERVICE_USER" "$(r $STATE)"
install -d -m 0755 "$(r $MODELS)"
install -d -m 0750 "$(r $LOG_DIR)" && chown "$SERVICE_USER:$SERVICE_USER" "$(r $LOG_DIR)"

if [ -e "$(r $ETC/config.yaml)" ]; then
    CONFIG=$ETC/config.yaml
elif [ -e "$(r $ORIG_CONFIG)" ]; then
    CONFIG=$ORIG_CONFIG
elif [ -e "$(r $ORIG_JSON)" ]; then
    CONFIG=$ORIG_JSON
else
    CONFIG=$ETC/config.yaml
    say "configuration $CONFIG (from deploy/pi-config.yaml)"
    install -m 0640 "$SRC/deploy/pi-config.yaml" "$(r $CONFIG)"
    chown "root:$SERVICE_USER" "$(r $CONFIG)"
    CHANGED=1
fi
say "configuration: $CONFIG"
if ! problem="$("$HAILO_OCR" config --print --config "$(r $CONFIG)" 2>&1 >/dev/null)"; then
    printf '%s\n' "$problem" >&2
    if [ -d "$(r $VENV.original)" ]; then
        warn "putting the original hailo-ocr back"
        rm -rf "$(r $VENV)" "$(r $PREFIX/.installed)"
        mv "$(r $VENV.original)" "$(r $VENV)"
        systemctl start "$UNIT" || true
        die "this version of hailo-ocr cannot read $CONFIG (above): the original runs again"
    fi
    die "this version of hailo-ocr cannot read $CONFIG (above); the service was not restarted"
fi
rm -rf "$(r $VENV.original)"

if [ "$TOKEN" = 1 ]; then
    if grep -qs '^HAILO_OCR_TOKEN=.' "$(r $ENV_FILE)" \
        || "$HAILO_OCR" config --print --config "$(r $CONFIG)" | grep -q "auth_token: '\*\*\*'"; then
        say "a bearer token is already set: keeping it"
    else
        NEW_TOKEN="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        ( umask 077; printf 'HAILO_OCR_TOKEN=%s\n' "$NEW_TOKEN" >> "$(r $ENV_FILE)" )
        chmod 0600 "$(r $ENV_FILE)"
        chown root:root "$(r $ENV_FILE)"
        say "bearer token added to $ENV_FILE"
        CHANGED=1
    fi
fi

# --- models ---------------------------------------------------------------------------------
MODELS_MISSING=0
if [ "$CPU" = 0 ]; then
    if [ "$FETCH" = 1 ]; then
        say "models (HEF files)"
        "$HAILO_OCR" models fetch --config "$(r $CONFIG)" ${ROOT:+--root "$ROOT"} \
            ${MODELS_URL:+--base-url "$MODELS_URL"} || MODELS_MISSING=1
    else
        "$HAILO_OCR" models fetch --check --config "$(r $CONFIG)" ${ROOT:+--root "$ROOT"} \
            || MODELS_MISSING=1
    fi
fi

# --- the unit -------------------------------------------------------------------------------
say "systemd unit"
install_if_changed "$SRC/deploy/hailo-ocr.service" "$(r $UNIT_DIR/$UNIT)" 0644 && UNITS_CHANGED=1
GENERATED="$(r $DROPINS/00-install.conf.new)"
install -d -m 0755 "$(r $DROPINS)"
{
    echo "# Written by deploy/install.sh (each run): the configuration file and the backend."
    echo "# Your own changes go in another drop-in: sudo systemctl edit hailo-ocr"
    echo "[Service]"
    echo "Environment=HAILO_OCR_CONFIG=$CONFIG"
    # auto: through hailo-device-manager when its socket exists, else the NPU directly.
    [ "$CPU" = 1 ] || echo "Environment=HAILO_OCR_BACKEND=auto"
} > "$GENERATED"
install_if_changed "$GENERATED" "$(r $DROPINS/00-install.conf)" 0644 && UNITS_CHANGED=1
rm -f "$GENERATED"
# dropin NAME WANTED: the shipped drop-in NAME installed when WANTED is 1, else removed.
dropin() {
    if [ "$2" = 1 ]; then
        install_if_changed "$SRC/deploy/hailo-ocr.service.d/$1" "$(r $DROPINS/$1)" 0644 \
            && UNITS_CHANGED=1
    elif [ -e "$(r $DROPINS/$1)" ]; then
        rm -f "$(r $DROPINS/$1)"
        UNITS_CHANGED=1
    fi
    return 0
}
dropin cpu.conf "$CPU"
dropin hailo8.conf "$([ "$CPU" = 0 ] && [ "$HAILO8" = 1 ] && echo 1 || echo 0)"
if [ "$UNITS_CHANGED" = 1 ]; then
    systemctl daemon-reload
    CHANGED=1
fi
systemctl is-enabled --quiet "$UNIT" || systemctl enable "$UNIT"
if [ "$CHANGED" = 1 ] || ! systemctl is-active --quiet "$UNIT"; then
    say "starting $UNIT"
    systemctl restart "$UNIT"
fi

# --- ready? ---------------------------------------------------------------------------------
say "checking the service"
if ! "$HAILO_OCR" verify --wait "$READY_TIMEOUT" ${ROOT:+--root "$ROOT"}; then
    warn "the service is not working yet: see above, and journalctl -u hailo-ocr -n 50"
    exit 1
fi
if [ -n "${NEW_TOKEN:-}" ]; then
    echo "Bearer token (also in $ENV_FILE): $NEW_TOKEN"
fi
if [ "$MODELS_MISSING" = 1 ]; then
    echo "The HEF files are not all in place, so the service runs on the CPU for now."
    echo "To fetch them and move the service to the NPU, run:"
    echo "    sudo $VENV/bin/hailo-ocr models fetch --restart"
fi
echo "hailo-ocr is installed and answering (address above; the web page is at /)."
