"""The ``hailo-ocr`` command line: help, config --print, extract (in-process actor tree)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.images import text_image
from tests.support.paths import REPO
from tests.support.server import words_of
from web.cli import build_parser, main
from web.settings import config_to_dict, load_config


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("HAILO_OCR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def fast_cfg(tmp_path) -> str:
    """Detection sized for the small synthetic images (keeps these tests quick)."""
    path = tmp_path / "fast.yaml"
    path.write_text("ocr:\n  det_limit_type: max\n  det_limit_side_len: 960\n")
    return str(path)


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "extract", "config", "verify", "models"):
        assert command in out
    for command, flags in (
        ("serve", ["--config", "--host", "--port", "--backend", "SIGTERM", "--cpu-fallback"]),
        ("extract", ["IMAGE", "--lang", "--json", "--config"]),
        ("config", ["--print", "--config"]),
        ("verify", ["--config", "--token", "--wait", "--url", "--unit"]),
        ("models fetch", ["--arch", "--dest", "--check", "--restart", "--base-url"]),
    ):
        with pytest.raises(SystemExit):
            main([*command.split(), "--help"])
        text = capsys.readouterr().out
        for flag in flags:
            assert flag in text, (command, flag)


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out


def test_config_print_is_the_effective_configuration(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: 12000\nbatching:\n  window_ms: 3\n")
    monkeypatch.setenv("HAILO_OCR_LANGUAGES", "en")
    assert main(["config", "--print", "--config", str(cfg)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["server"]["port"] == 12000
    assert printed["batching"]["window_ms"] == 3.0
    assert printed["ocr"]["languages"] == ["en"]
    assert printed["backend"]["type"] == "onnx"
    # The printed YAML is itself a valid configuration that means the same thing.
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(printed))
    assert config_to_dict(load_config(again, env={})) == printed


def test_config_errors_exit_2_with_a_message(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ocr:\n  languagez: [en]\n")
    assert main(["config", "--print", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "languagez" in err and "allowed" in err


def test_example_config_covers_every_key():
    example = REPO / "config.example.yaml"
    config = load_config(example, env={})
    documented = yaml.safe_load(example.read_text())
    defaults = config_to_dict(load_config(env={}))
    assert set(documented) == set(defaults)
    for section, keys in defaults.items():
        assert set(documented[section]) == set(keys), section
    # The example changes nothing: it documents the defaults.
    assert config_to_dict(config) == defaults
    text = example.read_text()
    assert text.count("#") > 40, "every key is commented"


def test_extract_prints_the_text_of_each_image(tmp_path, capsys, fast_cfg):
    a = tmp_path / "a.png"
    a.write_bytes(text_image(["HELLO WORLD"]))
    b = tmp_path / "b.jpg"
    b.write_bytes(text_image(["ORANGE", "PURPLE"], fmt=".jpg"))
    assert main(["extract", str(a), str(b), "--lang", "en", "--config", fast_cfg]) == 0
    out = capsys.readouterr().out
    assert f"==> {a} <==\nHELLO WORLD\n" in out
    assert f"==> {b} <==\nORANGE\nPURPLE\n" in out


def test_extract_json_matches_the_api_shape(tmp_path, capsys, fast_cfg):
    a = tmp_path / "a.png"
    a.write_bytes(text_image(["GARDEN"]))
    assert main(["extract", str(a), "--json", "-c", fast_cfg]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["success"] is True and words_of(doc["text"]) == ["GARDEN"]
    assert doc["file"] == str(a)
    assert set(doc) >= {"regions", "languages_detected", "statistics", "performance", "hailo_info"}
    assert doc["hailo_info"]["device"] is None


def test_extract_reports_bad_files_and_exits_1(tmp_path, capsys, fast_cfg):
    good = tmp_path / "good.png"
    good.write_bytes(text_image(["HELLO"]))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    code = main(["extract", str(tmp_path / "missing.png"), str(junk), str(good), "--json",
                 "--config", fast_cfg])
    assert code == 1
    captured = capsys.readouterr()
    docs = [json.loads(line) for line in captured.out.splitlines()]
    assert [d.get("code") for d in docs] == ["file_unreadable", "invalid_image", None]
    assert docs[2]["success"] is True and docs[2]["text"] == "HELLO"
    assert "missing.png" in captured.err and "invalid_image" in captured.err


def test_extract_unknown_language_falls_back_with_a_warning_or_fails_cleanly(
    tmp_path, capsys, fast_cfg
):
    a = tmp_path / "a.png"
    a.write_bytes(text_image(["HELLO"]))
    assert main(["extract", str(a), "--lang", "fr", "--config", fast_cfg]) == 0
    captured = capsys.readouterr()
    assert captured.out == "HELLO\n"
    assert "'fr'" in captured.err and "language_fallback" in captured.err
    reject = tmp_path / "reject.yaml"
    reject.write_text(Path(fast_cfg).read_text() + "  unknown_language: reject\n")
    assert main(["extract", str(a), "--lang", "fr", "--config", str(reject)]) == 1
    assert "unsupported_language" in capsys.readouterr().err


def test_parser_has_the_documented_commands():
    parser = build_parser()
    args = parser.parse_args(["serve", "--port", "8080", "--backend", "hailo"])
    assert (args.command, args.port, args.backend) == ("serve", 8080, "hailo")


def test_tiling_keys_reach_the_pipeline_and_are_checked():
    from actors.orchestrator import PipelineSettings
    from ocr.config import ConfigError

    cfg = load_config(env={}, overrides={"tiling": {"max_tiles": 4, "overlap": 0.3}})
    tiling = PipelineSettings.from_config(cfg).tiling
    assert (tiling.max_tiles, tiling.overlap, tiling.min_gain) == (4, 0.3, 1.5)
    for bad in ({"overlap": 0.6}, {"max_tiles": 0}, {"min_gain": 0.5}):
        with pytest.raises(ConfigError, match="tiling"):
            load_config(env={}, overrides={"tiling": bad})


def test_drain_and_read_timeout_keys_are_checked():
    from ocr.config import ConfigError

    cfg = load_config(env={}, overrides={"server": {"drain_delay_s": 0, "read_timeout_s": 5}})
    assert (cfg.server.drain_delay_s, cfg.server.read_timeout_s) == (0.0, 5.0)
    for key, bad in (("drain_delay_s", -1), ("read_timeout_s", 0)):
        with pytest.raises(ConfigError, match=key):
            load_config(env={}, overrides={"server": {key: bad}})


def test_extract_prints_a_pdf_page_by_page(tmp_path, capsys, fast_cfg):
    from tests.support import pdfgen

    scan = text_image(["GARDEN WINDOW"])
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(pdfgen.make_pdf([
        pdfgen.text_page(["INVOICE 4711", "TOTAL 12.50"], 20, page=(320, 200)),
        pdfgen.scanned_file_page(scan, 150),
        pdfgen.PageSpec(broken=True),
    ]))
    # A page that cannot be read is reported, the others are printed; exit status 1.
    assert main(["extract", str(pdf), "--config", fast_cfg]) == 1
    captured = capsys.readouterr()
    assert captured.out == ("--- page 1 ---\nINVOICE 4711\nTOTAL 12.50\n"
                            "--- page 2 ---\nGARDEN WINDOW\n--- page 3 ---\n")
    assert "page 3 was not read" in captured.err and "page_failed" in captured.err

    assert main(["extract", str(pdf), "--pages", "2", "--pdf-text", "ocr", "--dpi", "150",
                 "--json", "--config", fast_cfg]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(p["page"], p["source"], p["dpi"]) for p in doc["pages"]] == [(2, "ocr", 150)]
    assert doc["text"] == "GARDEN WINDOW"

    assert main(["extract", str(pdf), "--pages", "0-1", "--config", fast_cfg]) == 2
    assert "pages" in capsys.readouterr().err
