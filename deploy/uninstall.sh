#!/usr/bin/env bash
# Remove the hailo-ocr service that deploy/install.sh installed.
#
#   sudo deploy/uninstall.sh           remove the service; keep configuration and models
#   sudo deploy/uninstall.sh --purge   remove everything, configuration and models too
#
# Removed: the unit and the drop-ins install.sh writes (00-install.conf, cpu.conf,
# hailo8.conf), the venv and the other files it put in /opt/hailo-ocr.
# Kept (unless --purge): /etc/hailo-ocr (configuration, token), the original service's
# configuration (/etc/hailo/hailo-ocr.yaml, /etc/xdg/hailo-ocr), the models and state in
# /var/lib/hailo-ocr, the logs, drop-ins of your own, and the hailo-ocr user.
# --purge also removes those, all of /opt/hailo-ocr (the original's leftover server files
# too) and the hailo-ocr user and group.
#
# HAILO_OCR_ROOT=DIR works below DIR instead of / (tests).
set -euo pipefail

ROOT="${HAILO_OCR_ROOT:-}"
UNIT=hailo-ocr.service
SERVICE_USER=hailo-ocr
PREFIX=/opt/hailo-ocr
DROPINS=/etc/systemd/system/$UNIT.d
PURGE=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --purge) PURGE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
r() { printf '%s%s' "$ROOT" "$1"; }

[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

if command -v systemctl >/dev/null; then
    if systemctl is-active --quiet "$UNIT"; then
        say "stopping $UNIT"
        systemctl stop "$UNIT"
    fi
    if systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
        systemctl disable "$UNIT"
    fi
fi

say "removing the unit"
rm -f "$(r /etc/systemd/system/$UNIT)"
for f in 00-install.conf cpu.conf hailo8.conf; do
    rm -f "$(r $DROPINS/$f)"
done
if [ "$PURGE" = 1 ]; then
    rm -rf "$(r $DROPINS)"
else
    rmdir "$(r $DROPINS)" 2>/dev/null || true
fi
if command -v systemctl >/dev/null; then systemctl daemon-reload; fi

say "removing $PREFIX/venv"
rm -rf "$(r $PREFIX/venv)" "$(r $PREFIX/venv.original)"
rm -f "$(r $PREFIX/.installed)" "$(r $PREFIX/constraints.txt)" "$(r $PREFIX/README.md)"
rmdir "$(r $PREFIX)" 2>/dev/null || true

if [ "$PURGE" = 1 ]; then
    say "purging configuration, models, logs and the $SERVICE_USER user"
    rm -rf "$(r /etc/hailo-ocr)" "$(r /etc/xdg/hailo-ocr)" "$(r /var/lib/hailo-ocr)" \
        "$(r /var/log/hailo-ocr)" "$(r $PREFIX)"
    rm -f "$(r /etc/hailo/hailo-ocr.yaml)"
    rmdir "$(r /etc/hailo)" 2>/dev/null || true
    if getent passwd "$SERVICE_USER" >/dev/null; then userdel "$SERVICE_USER"; fi
    if getent group "$SERVICE_USER" >/dev/null; then groupdel "$SERVICE_USER"; fi
else
    for kept in /etc/hailo-ocr /etc/hailo/hailo-ocr.yaml /var/lib/hailo-ocr; do
        if [ -e "$(r $kept)" ]; then echo "kept: $kept"; fi
    done
    if [ -e "$(r $PREFIX)" ]; then
        echo "kept: $PREFIX (files that install.sh did not put there)"
    fi
    echo "(sudo deploy/uninstall.sh --purge removes these and the $SERVICE_USER user)"
fi
say "hailo-ocr is uninstalled"
