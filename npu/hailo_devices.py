"""Which Hailo devices this host has, and whether a given user may open them.

HailoRT finds devices by listing ``/sys/class/hailo_chardev`` (one entry per device the
driver bound, named after its node: ``hailo0`` is ``/dev/hailo0``; the entry's
``accelerator_type`` is 0 for a Hailo-8/8L and 1 for a Hailo-10H) and opens the node
read-write. Two start-up failures look alike from the status alone and need these facts
to be told apart and explained:

* ``HAILO_OUT_OF_PHYSICAL_DEVICES`` (74) is raised both when another process holds the
  device and when there is no device at all (the scan found nothing to open);
* ``HAILO_DRIVER_OPERATION_FAILED`` (36) at open means ``open("/dev/hailo0")`` failed:
  usually the user is not in the node's group, or systemd's ``DeviceAllow=`` leaves it out.

Nothing here imports ``hailo_platform``; its ``Device.scan()`` is consulted when a loaded
module is passed in. The permission check reads the mode bits (not ``os.access``), so it
answers for any user, e.g. the service's user when ``hailo-ocr verify`` runs as root.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path
from typing import Any, Final

import attrs

SYSFS_CLASS: Final = "/sys/class/hailo_chardev"
ACCELERATORS: Final = {"0": "Hailo-8/8L", "1": "Hailo-10H"}


@attrs.frozen
class DeviceNode:
    name: str  # "hailo0"
    path: str  # "/dev/hailo0"
    exists: bool
    accessible: bool  # read-write for the user asked about (by the mode bits)
    mode: str = ""  # "crw-rw----"
    owner: str = ""
    group: str = ""
    accelerator: str = ""  # "Hailo-10H", "Hailo-8/8L", or "" when unknown


@attrs.frozen
class DevicePresence:
    """What the host shows: device nodes from sysfs, and HailoRT's own scan if asked."""

    nodes: tuple[DeviceNode, ...]
    scanned: tuple[str, ...] | None  # Device.scan() ids; None when not asked or it failed
    user: str  # whose access ``accessible`` describes

    @property
    def present(self) -> bool:
        return bool(self.nodes) or bool(self.scanned)

    @property
    def inaccessible(self) -> tuple[DeviceNode, ...]:
        return tuple(n for n in self.nodes if n.exists and not n.accessible)


def _name(lookup: Any, ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def can_open_rw(st: os.stat_result, uid: int, gids: frozenset[int]) -> bool:
    """Read-write permission by the mode bits, as the kernel checks them (ACLs aside)."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        bits = stat.S_IRUSR | stat.S_IWUSR
    elif st.st_gid in gids:
        bits = stat.S_IRGRP | stat.S_IWGRP
    else:
        bits = stat.S_IROTH | stat.S_IWOTH
    return st.st_mode & bits == bits


def user_ids(user: str | None) -> tuple[str, int, frozenset[int]]:
    """(name, uid, group ids) of ``user``, or of this process when None."""
    if user is None:
        uid = os.geteuid()
        return _name(pwd.getpwuid, uid), uid, frozenset({os.getegid(), *os.getgroups()})
    entry = pwd.getpwnam(user)
    gids = {entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    return user, entry.pw_uid, frozenset(gids)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def list_nodes(
    *, root: str = "", uid: int | None = None, gids: frozenset[int] | None = None
) -> tuple[DeviceNode, ...]:
    """The device nodes the driver announced under ``root`` (``""`` = this host)."""
    if uid is None or gids is None:
        _, uid, gids = user_ids(None)
    sysfs = Path(root + SYSFS_CLASS)
    try:
        names = sorted(p.name for p in sysfs.iterdir())
    except OSError:
        return ()
    nodes = []
    for name in names:
        path = f"/dev/{name}"
        accelerator = ACCELERATORS.get(_read(sysfs / name / "accelerator_type"), "")
        try:
            st = os.stat(root + path)
        except OSError:
            nodes.append(DeviceNode(name, path, False, False, accelerator=accelerator))
            continue
        nodes.append(DeviceNode(
            name, path, True, can_open_rw(st, uid, gids), stat.filemode(st.st_mode),
            _name(pwd.getpwuid, st.st_uid), _name(grp.getgrgid, st.st_gid), accelerator,
        ))
    return tuple(nodes)


def probe(hp: Any = None, *, root: str = "", user: str | None = None) -> DevicePresence:
    """Nodes and (with ``hp``, a loaded ``hailo_platform``) HailoRT's scan. Never raises
    for a missing device: absence is the answer."""
    name, uid, gids = user_ids(user)
    scanned = None
    if hp is not None:
        try:
            scanned = tuple(str(d) for d in hp.Device.scan())
        except Exception:  # the scan itself failing tells nothing more than the nodes do
            scanned = None
    return DevicePresence(list_nodes(root=root, uid=uid, gids=gids), scanned, name)


def no_device_message(presence: DevicePresence) -> str:
    return (
        f"no Hailo device found: HailoRT's scan and {SYSFS_CLASS} list none. Check that the "
        "AI HAT+ 2 (or AI Kit) is fitted and its driver loaded: `sudo apt install dkms "
        "hailo-h10-all` (Hailo-8/8L: `hailo-all`), reboot, then `hailortcli scan` and "
        "`ls -l /dev/hailo*` should show it (`dmesg | grep -i hailo` says why not). "
        "Until then the service can run on the CPU: --backend onnx"
    )


def access_message(presence: DevicePresence) -> str:
    bad = presence.inaccessible
    if bad:
        node = bad[0]
        return (
            f"user {presence.user!r} may not open {node.path} ({node.mode} {node.owner}:"
            f"{node.group}): add it to the device's group, `sudo usermod -aG {node.group} "
            f"{presence.user}`, then restart the service (deploy/install.sh does this for the "
            f"hailo-ocr user)"
        )
    if presence.nodes:
        paths = ", ".join(n.path for n in presence.nodes)
        return (
            f"HailoRT could not open {paths} although its permissions allow user "
            f"{presence.user!r}: under systemd check that the unit's DeviceAllow= names the "
            "node (`systemctl cat hailo-ocr`); otherwise the driver is in a bad state "
            "(`dmesg | grep -i hailo`; a reboot usually clears it)"
        )
    return (
        "HailoRT could not open the device node (/dev/hailo0): usually the user is not in "
        "the node's group (`ls -l /dev/hailo*`, then `sudo usermod -aG <group> <user>`) or "
        "systemd's DeviceAllow= leaves it out"
    )


__all__ = [
    "SYSFS_CLASS", "DeviceNode", "DevicePresence", "access_message", "can_open_rw",
    "list_nodes", "no_device_message", "probe", "user_ids",
]
