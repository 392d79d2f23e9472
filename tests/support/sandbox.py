"""A pretend host for deploy/install.sh and deploy/uninstall.sh: TEST DOUBLES, not systemd.

:class:`SandboxHost` makes a root directory (``HAILO_OCR_ROOT``) and a directory of fake
system tools put first on ``PATH``; every call to them is recorded (``calls.jsonl``) so a
test can check what the scripts did and in which order. This file is also the fakes'
program: the shims run ``python tests/support/sandbox.py TOOL ARGS...``.

What each fake does:

* ``systemctl``: keeps unit state (enabled, the main process) in a JSON file. ``start`` /
  ``restart`` read the installed unit and its drop-ins below the root the way systemd
  merges them (later files win, an empty assignment clears a list; EnvironmentFile=
  overrides Environment=) and really start ``ExecStart`` with that environment and working
  directory, so the installed service answers HTTP. ``show`` prints the same settings in
  systemd's format. It does not sandbox the process, switch to ``User=`` or apply
  resource limits. Paths under /etc, /opt and /var are read below the root ("mapped").
* ``useradd``, ``groupadd``, ``usermod``, ``userdel``, ``groupdel``, ``getent``: a
  passwd/group pair inside the sandbox, never the host's.
* ``chown``: records only (the sandbox's users do not exist on the host).
* ``id -u``: 0, so the scripts run their root-only steps.
* ``python3 -m venv DIR``: a fake venv whose ``python`` is the test's own interpreter with
  the project on ``PYTHONPATH`` (plus ``site/`` of the sandbox when the venv sees the
  system's site-packages: a test puts HailoRT's distribution metadata there), whose
  ``hailo-ocr`` is the project's real CLI, and whose ``pip`` records its arguments and
  the constraints file it was given. Any other ``python3`` call runs the real interpreter.

:class:`ResourceServer` stands for Hailo's resources URL (where hailo-apps' downloader and
``hailo-ocr models fetch`` get the HEF files) and records what was asked of it.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

MAPPED = ("/etc/", "/opt/", "/var/", "/usr/local/hailo/", "/sys/", "/dev/")
LIST_KEYS = ("Environment", "EnvironmentFile", "ExecStart")


# --- the fakes (run as a program) ------------------------------------------------------------


class Tool:
    def __init__(self) -> None:
        self.state = Path(os.environ["SANDBOX_STATE"])
        self.root = os.environ["HAILO_OCR_ROOT"]

    def record(self, argv: list[str], **extra) -> None:
        with open(self.state / "calls.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": argv, **extra}) + "\n")

    def map(self, value: str) -> str:
        return self.root + value if value.startswith(MAPPED) else value

    # -- users and groups --
    def _db(self, name: str) -> list[list[str]]:
        return [line.split(":") for line in (self.state / name).read_text().splitlines() if line]

    def _write_db(self, name: str, rows: list[list[str]]) -> None:
        (self.state / name).write_text("".join(":".join(r) + "\n" for r in rows))

    def getent(self, args: list[str]) -> int:
        db, key = args[0], args[1]
        for row in self._db(db):
            if row[0] == key:
                print(":".join(row))
                return 0
        return 2

    def groupadd(self, args: list[str]) -> int:
        name = args[-1]
        rows = self._db("group")
        if any(r[0] == name for r in rows):
            return 9
        rows.append([name, "x", str(900 + len(rows)), ""])
        self._write_db("group", rows)
        return 0

    def useradd(self, args: list[str]) -> int:
        name = args[-1]
        gid = args[args.index("--gid") + 1]
        rows = self._db("passwd")
        if any(r[0] == name for r in rows):
            return 9
        home = args[args.index("--home-dir") + 1]
        rows.append([name, "x", str(900 + len(rows)), gid, "", home, "/usr/sbin/nologin"])
        self._write_db("passwd", rows)
        return 0

    def usermod(self, args: list[str]) -> int:
        group, user = args[args.index("-aG") + 1], args[-1]
        rows = self._db("group")
        for r in rows:
            if r[0] == group:
                members = [m for m in r[3].split(",") if m]
                if user not in members:
                    members.append(user)
                r[3] = ",".join(members)
                self._write_db("group", rows)
                return 0
        return 6

    def userdel(self, args: list[str]) -> int:
        self._write_db("passwd", [r for r in self._db("passwd") if r[0] != args[-1]])
        return 0

    def groupdel(self, args: list[str]) -> int:
        self._write_db("group", [r for r in self._db("group") if r[0] != args[-1]])
        return 0

    # -- python3 -m venv and the venv's pip --
    def venv(self, args: list[str]) -> int:
        target = Path(args[-1])
        site = "--system-site-packages" in args
        bin_dir = target / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        paths = [os.environ["SANDBOX_REPO"]] + ([str(self.state / "site")] if site else [])
        py = shlex.quote(sys.executable)
        _script(bin_dir / "python", f'PYTHONPATH={shlex.quote(":".join(paths))} exec {py} "$@"')
        _script(bin_dir / "pip", f'exec {py} {shlex.quote(__file__)} pip "$@"')
        own = shlex.quote(str(bin_dir / "python"))
        _script(bin_dir / "hailo-ocr", f'exec {own} -m web.cli "$@"')
        (target / "pyvenv.cfg").write_text(
            f"home = {Path(sys.executable).parent}\n"
            f"include-system-site-packages = {'true' if site else 'false'}\n"
        )
        return 0

    def pip(self, args: list[str]) -> int:
        return 0  # recorded by main(), with the constraints file's content

    # -- systemctl --
    def _units(self) -> dict:
        path = self.state / "systemd.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _save(self, units: dict) -> None:
        (self.state / "systemd.json").write_text(json.dumps(units, indent=1))

    def unit_settings(self, unit: str) -> dict[str, list[str]] | None:
        base = Path(self.map(f"/etc/systemd/system/{unit}"))
        if not base.is_file():
            return None
        files = [base, *sorted(Path(f"{base}.d").glob("*.conf"))]
        out: dict[str, list[str]] = {}
        for path in files:
            for line in path.read_text().replace("\\\n", " ").splitlines():
                line = line.strip()
                if not line or line.startswith(("#", ";", "[")) or "=" not in line:
                    continue
                key, _, value = (p.strip() for p in line.partition("="))
                if key in LIST_KEYS:
                    out[key] = out.get(key, []) + [value] if value else []
                else:
                    out[key] = [value]
        return out

    def environment(self, s: dict[str, list[str]]) -> tuple[dict[str, str], list[str]]:
        env: dict[str, str] = {}
        for value in s.get("Environment", []):
            for item in shlex.split(value):
                key, _, val = item.partition("=")
                env[key] = self.map(val)
        files = []
        for value in s.get("EnvironmentFile", []):
            path = self.map(value.lstrip("-"))
            files.append(path)
            if Path(path).is_file():
                for line in Path(path).read_text().splitlines():
                    line = line.strip()
                    if line and not line.startswith(("#", ";")) and "=" in line:
                        key, _, val = line.partition("=")
                        env[key.strip()] = self.map(val.strip().strip("\"'"))
        return env, files

    def _alive(self, pid: int | None) -> bool:
        if not pid:
            return False
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (started by an earlier call): probe it
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            return not _zombie(pid)
        return done == 0

    def _start(self, unit: str, units: dict) -> int:
        s = self.unit_settings(unit)
        if s is None:
            print(f"Failed to start {unit}: Unit {unit} not found.", file=sys.stderr)
            return 5
        env = {k: v for k, v in os.environ.items() if not k.startswith("HAILO_OCR_")}
        env.pop("SANDBOX_STATE", None)
        unit_env, _ = self.environment(s)
        env.update(unit_env)
        argv = [self.map(a) for a in shlex.split(s["ExecStart"][-1])]
        cwd = self.map(s.get("WorkingDirectory", ["/"])[-1])
        log = open(self.state / f"{unit}.log", "ab")
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        units.setdefault(unit, {})["pid"] = proc.pid
        return 0

    def _stop(self, unit: str, units: dict) -> None:
        pid = units.get(unit, {}).get("pid")
        if pid and self._alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while self._alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._alive(pid):
                os.kill(pid, signal.SIGKILL)
        units.setdefault(unit, {})["pid"] = None

    def systemctl(self, args: list[str]) -> int:
        quiet = "--quiet" in args or "-q" in args
        words = [a for a in args if not a.startswith("-")]
        props = [a.split("=", 1)[1] for a in args if a.startswith("--property=")]
        cmd, names = words[0], words[1:]
        units = self._units()
        unit = names[0] if names else ""
        try:
            if cmd == "daemon-reload":
                return 0
            if cmd == "is-active":
                active = self._alive(units.get(unit, {}).get("pid"))
                if not quiet:
                    print("active" if active else "inactive")
                return 0 if active else 3
            if cmd == "is-enabled":
                enabled = units.get(unit, {}).get("enabled", False)
                if not quiet:
                    print("enabled" if enabled else "disabled")
                return 0 if enabled else 1
            if cmd in ("enable", "disable"):
                units.setdefault(unit, {})["enabled"] = cmd == "enable"
                return 0
            if cmd == "stop":
                self._stop(unit, units)
                return 0
            if cmd in ("start", "restart", "try-restart"):
                if cmd == "try-restart" and not self._alive(units.get(unit, {}).get("pid")):
                    return 0
                if cmd != "start" or not self._alive(units.get(unit, {}).get("pid")):
                    self._stop(unit, units)
                    return self._start(unit, units)
                return 0
            if cmd == "show":
                return self._show(unit, units, props)
            print(f"fake systemctl: {cmd} is not modelled", file=sys.stderr)
            return 1
        finally:
            self._save(units)

    def _show(self, unit: str, units: dict, props: list[str]) -> int:
        s = self.unit_settings(unit)
        if s is None:
            print("LoadState=not-found")
            return 0
        env, files = self.environment({"Environment": s.get("Environment", [])})
        argv = [self.map(a) for a in shlex.split(s["ExecStart"][-1])]
        pid = units.get(unit, {}).get("pid")
        state = "active" if self._alive(pid) else ("failed" if pid else "inactive")
        values = {
            "LoadState": "loaded",
            "ActiveState": state,
            "User": s.get("User", [""])[-1],
            "ExecStart": (f"{{ path={argv[0]} ; argv[]={shlex.join(argv)} ; ignore_errors=no ; "
                          "start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; "
                          "status=0/0 }"),
            "Environment": " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()),
        }
        for key in props or [*values, "EnvironmentFiles"]:
            if key == "EnvironmentFiles":
                _, files = self.environment({"EnvironmentFile": s.get("EnvironmentFile", [])})
                for f in files:
                    print(f"EnvironmentFiles={f} (ignore_errors=yes)")
            elif key in values:
                print(f"{key}={values[key]}")
        return 0


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    fake = Tool()
    extra = {}
    if tool == "pip" and "-c" in args:
        extra["constraints"] = Path(args[args.index("-c") + 1]).read_text()
    if tool != "getent":  # lookups are noise; everything else is what the script did
        fake.record([tool, *args], **extra)
    if tool == "id":
        print("0")
        return 0
    if tool == "chown":
        return 0
    handler = getattr(fake, tool.replace("-", "_"))
    return int(handler(args) or 0)


# --- the host (used by the tests) ----------------------------------------------------------


class ResourceServer:
    """Hailo's resources URL, served on loopback: ``files`` by path, and every path asked
    for in :attr:`requests`. Paths in ``short`` announce more bytes than they send."""

    def __init__(self, files: dict[str, bytes], short: frozenset[str] = frozenset()) -> None:
        self.files = files
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server name
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                extra = 100 if self.path in short else 0
                self.send_header("Content-Length", str(len(body) + extra))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()



class SandboxHost:
    """A root directory, the fake tools, and what they recorded."""

    TOOLS = ("systemctl", "useradd", "groupadd", "usermod", "userdel", "groupdel", "getent",
             "chown", "id")

    def __init__(self, base: Path, repo: Path) -> None:
        self.repo = repo
        self.root = base / "root"
        self.state = base / "state"
        self.bin = base / "bin"
        for d in (self.root, self.state, self.bin, self.state / "site"):
            d.mkdir(parents=True)
        (self.state / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        (self.state / "group").write_text("root:x:0:\ndaemon:x:1:\nvideo:x:44:\n")
        (self.state / "calls.jsonl").write_text("")
        me = shlex.quote(__file__)
        py = shlex.quote(sys.executable)
        for tool in self.TOOLS:
            _script(self.bin / tool, f'exec {py} {me} {tool} "$@"')
        _script(self.bin / "python3", (
            f'if [ "$1" = -m ] && [ "$2" = venv ]; then exec {py} {me} venv "$@"; fi\n'
            f'exec {py} "$@"'))

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HAILO_OCR_")}
        env.update(
            PATH=f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            HAILO_OCR_ROOT=str(self.root), SANDBOX_STATE=str(self.state),
            SANDBOX_REPO=str(self.repo), HAILO_OCR_READY_TIMEOUT="90",
        )
        return env

    def run(self, script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(self.repo / "deploy" / script), *args], env=self.env,
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def path(self, system_path: str) -> Path:
        return Path(str(self.root) + system_path)

    def calls(self, start: int = 0) -> list[dict]:
        lines = (self.state / "calls.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines[start:]]

    def mark(self) -> int:
        return len((self.state / "calls.jsonl").read_text().splitlines())

    def units(self) -> dict:
        path = self.state / "systemd.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def set_unit(self, unit: str, **state) -> None:
        units = self.units()
        units.setdefault(unit, {}).update(state)
        (self.state / "systemd.json").write_text(json.dumps(units))

    def group_members(self, group: str) -> list[str]:
        for line in (self.state / "group").read_text().splitlines():
            name, _, _, members = line.split(":")
            if name == group:
                return [m for m in members.split(",") if m]
        return []

    def users(self) -> list[str]:
        return [line.split(":")[0] for line in (self.state / "passwd").read_text().splitlines()]

    def service_log(self, unit: str = "hailo-ocr.service") -> str:
        path = self.state / f"{unit}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def snapshot(self) -> dict[str, tuple]:
        """Every path below the root: (mode, sha256 of the content) for files, (mode,) else."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in [*dirnames, *filenames]:
                p = Path(dirpath) / name
                st = p.lstat()
                rel = str(p.relative_to(self.root))
                if stat.S_ISREG(st.st_mode):
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                    out[rel] = (stat.filemode(st.st_mode), digest)
                else:
                    out[rel] = (stat.filemode(st.st_mode),)
        return out

    def stop_services(self) -> None:
        """Stop what the fake systemctl started (by its recorded pid)."""
        for state in self.units().values():
            pid = state.get("pid")
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
