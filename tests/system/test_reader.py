"""``hailo-ocr read`` (``web/reader.py``): the real command, as a subprocess, against the
real service: in-process Hypercorn where that is enough, a ``hailo-ocr serve`` subprocess
where the server itself must go away (killed, restarted, stopped with SIGTERM)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import httpx
import pytest
import trio
import yaml

from tests.support.paths import REPO
from tests.support.server import (
    ControlledBackend,
    free_port,
    quick,
    running_server,
    wait_listening,
    wait_until,
    words_of,
    write_image_folder,
    write_pages,
)
from web.cli import main
from web.reader import READ_SUFFIXES, prepare_resume, walk_inputs

#: The progress line's redraw: carriage return, erase to the end of the line.
REDRAW = "\r\x1b[K"


def client_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILO_OCR_")}
    return {**env, **extra}


async def run_read(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    with trio.fail_after(180):
        return await trio.run_process(
            [sys.executable, "-m", "web.cli", "read", *args], cwd=REPO,
            env=env or client_env(), capture_stdout=True, capture_stderr=True, check=False,
        )


def jsonl(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the file ends with a whole line"
    return [json.loads(line) for line in text.splitlines()]


def without_timings(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "performance"}


# -- in-process server ---------------------------------------------------------------------


async def test_a_folder_is_read_exactly_as_rest_reads_each_file(config, tmp_path):
    """Every accepted format in subfolders, bad files among them: one line per file, the
    REST body of that file plus ``file``; failures listed, exit 1. With a token."""
    root = tmp_path / "in"
    root.mkdir()
    expected = write_image_folder(root)
    out = tmp_path / "results.jsonl"
    cfg = quick(config, server={"auth_token": "sesame"})
    async with running_server(cfg) as server:
        done = await run_read(str(root), "--url", server.url, "--out", str(out),
                              env=client_env(HAILO_OCR_TOKEN="sesame"))
        lines = jsonl(out)
        async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                     headers={"Authorization": "Bearer sesame"}) as http:
            rest = {}
            for doc in lines:
                data = await trio.Path(doc["file"]).read_bytes()
                r = await http.post("/v1/ocr/extract", files={"image": ("f", data)})
                rest[doc["file"]] = r.json()
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert sorted(d["file"] for d in lines) == sorted(str(root / n) for n in expected)
    for doc in lines:
        name = Path(doc["file"]).relative_to(root).as_posix()
        assert list(doc)[:2] == ["file", "success"]
        body = {k: v for k, v in doc.items() if k != "file"}
        if name == "bad/empty.jpg":  # refused by the client itself: same code, own words
            assert (body["success"], body["code"]) == (False, rest[doc["file"]]["code"])
        else:
            assert without_timings(body) == without_timings(rest[doc["file"]]), name
        if isinstance(expected[name], list):
            assert doc["success"] is True and words_of(doc["text"]) == expected[name], name
        else:
            assert set(doc) == {"file", "success", "error", "code"}, name
            assert doc["code"] == expected[name], (name, doc)
            assert f"{doc['file']}: {doc['error']} ({doc['code']})" in stderr
    bad = [n for n, e in expected.items() if isinstance(e, str)]
    assert f"{len(expected)} of {len(expected)} files" in stderr
    assert f"{len(expected) - len(bad)} read, {len(bad)} failed" in stderr
    assert "failures by error code: invalid_image 2, image_too_small 1, " \
           "unsupported_media_type 1" in stderr
    assert done.stdout == b"", "results went to --out; no progress off a terminal"


async def test_text_to_stdout_off_a_terminal_has_no_progress(config, tmp_path):
    files, words = write_pages(tmp_path, 3)
    async with running_server(quick(config)) as server:
        done = await run_read(str(tmp_path), "--url", server.url, "--text", "--lang", "en")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    blocks = dict(re.findall(r"==> (.+?) <==\n(.*?)\n(?===> |\Z)", out, re.S))
    assert {Path(k).name: words_of(v) for k, v in blocks.items()} == words
    assert "\x1b[" not in out + done.stderr.decode()
    assert "3 of 3 files" in done.stderr.decode()


async def test_pdfs_in_a_folder_are_read_page_by_page(config, tmp_path):
    from tests.support import pdfgen

    files, words = write_pages(tmp_path, 1)
    (tmp_path / "doc.pdf").write_bytes(pdfgen.make_pdf([
        pdfgen.text_page(["FIRST PAGE"], 20, page=(300, 120)),
        pdfgen.scanned_file_page(files[0].path.read_bytes(), 150),
    ]))
    async with running_server(quick(config)) as server:
        done = await run_read(str(tmp_path), "--url", server.url)
    assert done.returncode == 0, done.stderr
    docs = {Path(d["file"]).name: d for d in map(json.loads, done.stdout.decode().splitlines())}
    pdf = docs.pop("doc.pdf")
    assert pdf["text"] == "FIRST PAGE" and len(docs) == 1
    assert [(p["page"], p["source"]) for p in pdf["pages"]] == [(1, "text_layer"), (2, "ocr")]
    assert words_of(pdf["pages"][1]["text"]) == list(words.values())[0]
    assert "2 document pages" in done.stderr.decode()
    async with running_server(quick(config)) as server:
        done = await run_read(str(tmp_path / "doc.pdf"), "--url", server.url, "--text")
    assert done.stdout.decode() == (
        "--- page 1 ---\nFIRST PAGE\n--- page 2 ---\n" + " ".join(list(words.values())[0])
        + "\n")


async def test_resume_after_an_interrupted_run(config, tmp_path):
    """Ctrl-C after three files: the output holds three whole lines. A torn last line and
    a failure line are added to it (a killed writer, a failed file); --resume keeps the
    three lines as they were and sends exactly the files not read yet."""
    gate = trio.Event()
    cfg = quick(config)
    backend = ControlledBackend(cfg, det_gate=gate, det_free_calls=3)
    root = tmp_path / "in"
    root.mkdir()
    _, words = write_pages(root, 10)
    out = tmp_path / "out.jsonl"
    async with running_server(cfg, {"cpu": lambda _ids: backend}) as server:
        service = server.state.service
        # One at a time: the fourth file's detection is held once three files are read
        # (with more in flight, a held detection would hold the device from their
        # recognition too).
        args = [sys.executable, "-m", "web.cli", "read", str(root), "--url", server.url,
                "--out", str(out), "--in-flight", "1"]
        proc = await trio.lowlevel.open_process(
            args, cwd=REPO, env=client_env(), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        try:
            await wait_until(lambda: out.exists() and out.read_text().count("\n") == 3, 60)
            await wait_until(lambda: service.statistics().requests_in_flight > 0)
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(20):
                code = await proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        assert code == 130
        first = out.read_bytes()
        first_run = jsonl(out)
        assert len(first_run) == 3 and all(d["success"] for d in first_run)
        unread = sorted(set(words) - {Path(d["file"]).name for d in first_run})
        with out.open("a") as f:
            f.write(json.dumps({"file": str(root / unread[0]), "success": False,
                                "error": "the service is shutting down",
                                "code": "shutting_down"}) + "\n")
            f.write('{"file": "' + str(root / unread[1]))  # torn: no end, no newline
        gate.set()
        admitted = service.statistics().requests_admitted
        done = await run_read(str(root), "--url", server.url, "--out", str(out), "--resume")
        sent_again = service.statistics().requests_admitted - admitted
    assert done.returncode == 0, done.stderr
    assert "3 skipped" in done.stderr.decode()
    assert out.read_bytes().startswith(first), "lines already read are kept as they were"
    final = jsonl(out)
    assert sorted(Path(d["file"]).name for d in final) == sorted(words)
    assert all(d["success"] and words_of(d["text"]) == words[Path(d["file"]).name]
               for d in final)
    assert sent_again == len(unread) == 7


async def test_progress_on_a_pseudo_terminal(config, tmp_path):
    """On a terminal: one line redrawn in place (files, lines/s, ETA, errors), never
    wider than the terminal; results printed to the same terminal stay whole lines;
    the summary at the end."""
    root = tmp_path / "in"
    root.mkdir()
    _, words = write_pages(root, 8, lines=3)
    (root / "junk.png").write_bytes(b"not an image")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 90, 0, 0))
    async with running_server(quick(config, server={"max_in_flight": 2})) as server:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "web.cli", "read", str(root), "--url", server.url],
            cwd=REPO, env=client_env(), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)

        def drain() -> bytes:
            chunks = []
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's last writer is gone
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            with trio.fail_after(120):
                screen = (await trio.to_thread.run_sync(drain)).decode()
                code = await proc.wait()
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
    assert code == 1, screen  # junk.png failed
    screen = screen.replace("\r\n", "\n")
    draws = [d.split("\n")[0] for d in screen.split(REDRAW)[1:]]
    draws = [d for d in draws if d and not d.startswith("{")]  # not the results
    bars = [d for d in draws if re.search(r"\d+/9 files", d)]
    assert len(bars) >= 3, screen
    assert all(len(d) <= 90 for d in draws), [d for d in draws if len(d) > 90]
    assert any("lines/s" in d and "ETA" in d and "error" in d and d.startswith("[#")
               for d in bars), bars
    assert any("1 error" in d for d in bars), "errors so far are counted"
    results = {}
    for line in screen.split("\n"):
        line = line.rsplit(REDRAW, 1)[-1]
        if line.startswith("{"):
            doc = json.loads(line)
            results[Path(doc["file"]).name] = doc
    assert sorted(results) == sorted([*words, "junk.png"])
    assert "9 of 9 files" in screen and "failures by error code: invalid_image 1" in screen


# -- a real ``hailo-ocr serve`` that goes away -----------------------------------------------


async def start_serve(tmp_path: Path, port: int, n: int) -> tuple[trio.Process, Path]:
    settings = {
        # No drain: during one the server serves as usual (the client may finish the whole
        # folder there); this test is about what follows, the refusals and the close.
        "server": {"shutdown_grace_s": 10.0, "drain_delay_s": 0.0},
        "ocr": {"det_limit_type": "max", "det_limit_side_len": 960},
        "onnx_models": {"intra_op_threads": 1},
    }
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    log_path = tmp_path / f"serve{n}.log"
    with log_path.open("wb") as log:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "web.cli", "serve", "--config", str(cfg), "--port",
             str(port)], stdout=log, stderr=subprocess.STDOUT, env=client_env(), cwd=REPO)
    await wait_listening(proc, log_path)
    return proc, log_path


@pytest.mark.slow
async def test_reconnects_after_the_server_restarts_mid_run(tmp_path):
    """The server is killed (connections drop: the files in flight are sent again once it
    is back), then stopped with SIGTERM (it answers shutting_down and closes the socket)
    and started again: the run completes, every file read exactly once, exit 0."""
    root = tmp_path / "in"
    root.mkdir()
    _, words = write_pages(root, 16, lines=6)
    out = tmp_path / "out.jsonl"
    port = free_port()
    servers = [await start_serve(tmp_path, port, 1)]
    client = await trio.lowlevel.open_process(
        [sys.executable, "-m", "web.cli", "read", str(root), "--url",
         f"http://127.0.0.1:{port}", "--out", str(out), "--in-flight", "2"],
        cwd=REPO, env=client_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def lines_out() -> int:
        return out.read_text().count("\n") if out.exists() else 0

    try:
        await wait_until(lambda: lines_out() >= 2, 90)
        servers[0][0].kill()
        await servers[0][0].wait()
        servers.append(await start_serve(tmp_path, port, 2))
        await wait_until(lambda: lines_out() >= 6, 90)
        servers[1][0].send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await servers[1][0].wait() == 0, servers[1][1].read_text()
        assert lines_out() < len(words), "the client still has work when the server stops"
        servers.append(await start_serve(tmp_path, port, 3))
        with trio.fail_after(120):
            code = await client.wait()
        stderr = (await client.stderr.receive_some(1 << 20)).decode()
    finally:
        for proc, _ in servers:
            if proc.poll() is None:
                proc.kill()
        if client.poll() is None:
            client.kill()
    assert code == 0, stderr
    final = jsonl(out)
    assert sorted(Path(d["file"]).name for d in final) == sorted(words)
    assert all(d["success"] and words_of(d["text"]) == words[Path(d["file"]).name]
               for d in final)
    assert "2 reconnections" in stderr, stderr
    assert "sent again after a lost connection" in stderr, stderr
    assert "SIGTERM: shutting down" in servers[1][1].read_text()


# -- the command line, in-process ----------------------------------------------------------


def test_help_and_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "read" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["read", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--url", "--out", "--text", "--resume", "--in-flight", "--retries", "--token",
                 "--quiet", "HAILO_OCR_TOKEN", "ws_max_in_flight"):
        assert flag in text, flag
    assert main(["read", str(tmp_path), "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(["read", str(tmp_path)]) == 2  # an empty folder
    assert "no files to read" in capsys.readouterr().err


def test_walking_folders(tmp_path):
    expected = write_image_folder(tmp_path / "in")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "linked.jpg").write_bytes(b"x")
    (tmp_path / "in" / "a" / "link.jpg").symlink_to(tmp_path / "elsewhere" / "linked.jpg")
    (tmp_path / "in" / "a" / "dirlink").symlink_to(tmp_path / "elsewhere")
    root = str(tmp_path / "in")
    files = walk_inputs([root, str(tmp_path / "missing.png"), root + "/a/01.png",
                         str(tmp_path / "in" / "notes.txt")])
    names = [f.name for f in files]
    walked = sorted([*expected, "a/link.jpg"])
    assert names[:len(walked)] == [os.path.join(root, n) for n in walked]
    assert names[len(walked):] == [str(tmp_path / "missing.png"),
                                   str(tmp_path / "in" / "notes.txt")]
    assert {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pdf"} == READ_SUFFIXES


def test_resume_keeps_only_whole_lines_of_files_read(tmp_path):
    out = tmp_path / "out.jsonl"
    assert prepare_resume(out) == set() and not out.exists()
    good = [json.dumps({"file": f, "success": True, "text": f.upper()}) for f in "ab"]
    lines = [good[0], json.dumps({"file": "c", "success": False, "error": "x", "code": "y"}),
             "not json", good[1], good[0]]
    out.write_text("\n".join(lines) + '\n{"file": "d", "succ')
    assert prepare_resume(out) == {"a", "b"}
    assert out.read_text() == good[0] + "\n" + good[1] + "\n"
    before = out.stat().st_mtime_ns
    assert prepare_resume(out) == {"a", "b"}
    assert out.stat().st_mtime_ns == before, "a clean file is left alone"
