"""Telling "no device", "busy" and "may not open it" apart, from what the driver shows."""

from __future__ import annotations

import os
from pathlib import Path

from npu import hailo_devices
from npu.hailo_devices import DevicePresence, can_open_rw


def fake_device(root: Path, name: str = "hailo0", accel: str = "1", mode: int = 0o660) -> Path:
    sysfs = root / "sys/class/hailo_chardev" / name
    sysfs.mkdir(parents=True)
    (sysfs / "accelerator_type").write_text(accel + "\n")
    node = root / "dev" / name
    node.parent.mkdir(exist_ok=True)
    node.write_bytes(b"")
    node.chmod(mode)
    return node


def test_no_driver_no_nodes(tmp_path):
    assert hailo_devices.list_nodes(root=str(tmp_path)) == ()
    presence = hailo_devices.probe(root=str(tmp_path))
    assert not presence.present
    assert "hailo-h10-all" in hailo_devices.no_device_message(presence)


def test_nodes_and_who_may_open_them(tmp_path):
    node = fake_device(tmp_path)
    st = node.stat()
    outsider = hailo_devices.list_nodes(root=str(tmp_path), uid=12345, gids=frozenset({54321}))
    member = hailo_devices.list_nodes(root=str(tmp_path), uid=12345,
                                      gids=frozenset({st.st_gid}))
    assert [(n.path, n.accelerator, n.accessible) for n in outsider] == [
        ("/dev/hailo0", "Hailo-10H", False)]
    assert member[0].accessible and member[0].mode == "-rw-rw----"
    msg = hailo_devices.access_message(DevicePresence(outsider, None, "hailo-ocr"))
    assert f"sudo usermod -aG {outsider[0].group} hailo-ocr" in msg and "/dev/hailo0" in msg


def test_permission_bits_as_the_kernel_reads_them():
    st = os.stat_result((0o20660, 0, 0, 0, 10, 44, 0, 0, 0, 0))  # crw-rw---- uid 10 gid 44
    assert can_open_rw(st, 10, frozenset())  # owner
    assert can_open_rw(st, 99, frozenset({44}))  # group
    assert not can_open_rw(st, 99, frozenset({1}))  # others: no
    assert can_open_rw(st, 0, frozenset())  # root
    world = os.stat_result((0o20666, 0, 0, 0, 10, 44, 0, 0, 0, 0))
    assert can_open_rw(world, 99, frozenset())


def test_a_node_announced_but_absent_and_a_hailo8(tmp_path):
    fake_device(tmp_path, "hailo1", accel="0").unlink()
    (node,) = hailo_devices.list_nodes(root=str(tmp_path))
    assert (node.exists, node.accessible, node.accelerator) == (False, False, "Hailo-8/8L")


def test_with_a_scan_a_device_is_present_even_without_sysfs(tmp_path):
    class Hp:
        class Device:
            @staticmethod
            def scan():
                return ["0000:01:00.0"]

    presence = hailo_devices.probe(Hp, root=str(tmp_path))
    assert presence.present and presence.scanned == ("0000:01:00.0",)
