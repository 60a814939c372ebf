"""Bad input through the CLI: a one-line error naming the problem, exit code 2, nothing written."""

import subprocess
import sys

import pytest

from conftest import demo_rows, write_csv
from conceptkit.pipelines.cli.main import main


@pytest.fixture
def good_rows():
    return demo_rows(per_class=3, classes=["cooking", "music"])


def run_cli(args, capsys):
    rc = main(args)
    err = capsys.readouterr().err.strip()
    return rc, err


def build_args(tmp_path, items, *extra):
    return ["build", "--items", str(items), "--out", str(tmp_path / "runs" / "x"), "--cache-dir",
            str(tmp_path / "cache"), "--llm-base-url", "http://127.0.0.1:9/v1", "--llm-model", "m", *extra]


def assert_user_error(rc, err, tmp_path, *needles):
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_file(tmp_path, capsys):
    rc, err = run_cli(build_args(tmp_path, tmp_path / "nope.csv"), capsys)
    assert_user_error(rc, err, tmp_path, "items file not found", "nope.csv")


def test_unknown_format(tmp_path, capsys):
    (tmp_path / "items.xlsx").write_text("x")
    rc, err = run_cli(build_args(tmp_path, tmp_path / "items.xlsx"), capsys)
    assert_user_error(rc, err, tmp_path, "unknown item file format '.xlsx'")


def test_missing_column(tmp_path, capsys, good_rows):
    items = write_csv(tmp_path / "i.csv", good_rows)
    rc, err = run_cli(build_args(tmp_path, items, "--text-column", "body"), capsys)
    assert_user_error(rc, err, tmp_path, "no text column 'body'", "columns: id, text, label")


def test_empty_dataset(tmp_path, capsys):
    items = tmp_path / "i.csv"
    items.write_text("id,text,label\n")
    rc, err = run_cli(build_args(tmp_path, items), capsys)
    assert_user_error(rc, err, tmp_path, "empty (0 rows)")


def test_class_with_no_items(tmp_path, capsys, good_rows):
    items = write_csv(tmp_path / "i.csv", good_rows)
    (tmp_path / "classes.txt").write_text("cooking\nmusic\nsports\n")
    rc, err = run_cli(build_args(tmp_path, items, "--classes", str(tmp_path / "classes.txt")), capsys)
    assert_user_error(rc, err, tmp_path, "class 'sports'", "has no items")


def test_duplicate_ids(tmp_path, capsys, good_rows):
    items = write_csv(tmp_path / "i.csv", good_rows + [good_rows[0]])
    rc, err = run_cli(build_args(tmp_path, items), capsys)
    assert_user_error(rc, err, tmp_path, "duplicate item ids", repr(good_rows[0]["id"]))


def test_non_utf8_text(tmp_path, capsys):
    items = tmp_path / "i.csv"
    items.write_bytes(b"id,text,label\n1,caf\xe9 au lait,cooking\n")
    rc, err = run_cli(build_args(tmp_path, items), capsys)
    assert_user_error(rc, err, tmp_path, "line 2 is not valid UTF-8")


def test_malformed_yaml(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("items: {path: x.csv\n")
    rc, err = run_cli(["build", "--config", str(cfg)], capsys)
    assert_user_error(rc, err, tmp_path, "c.yaml: malformed YAML at line")


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("itemz:\n  path: x.csv\n")
    rc, err = run_cli(["build", "--config", str(cfg)], capsys)
    assert_user_error(rc, err, tmp_path, "itemz", "Extra inputs are not permitted")


def test_unreachable_llm(tmp_path, capsys, good_rows):
    items = write_csv(tmp_path / "i.csv", good_rows)
    rc, err = run_cli(build_args(tmp_path, items), capsys)
    assert_user_error(rc, err, tmp_path, "LLM endpoint http://127.0.0.1:9/v1 is unreachable")


def test_unset_api_key_variable(tmp_path, capsys, good_rows, monkeypatch):
    monkeypatch.delenv("CK_MISSING_KEY", raising=False)
    items = write_csv(tmp_path / "i.csv", good_rows)
    rc, err = run_cli(build_args(tmp_path, items, "--llm-api-key-env", "CK_MISSING_KEY"), capsys)
    assert_user_error(rc, err, tmp_path, "CK_MISSING_KEY", "not set")


def test_unlabelled_items_need_classes(tmp_path, capsys, good_rows):
    items = write_csv(tmp_path / "i.csv", [{"id": r["id"], "text": r["text"]} for r in good_rows])
    rc, err = run_cli(build_args(tmp_path, items), capsys)
    assert_user_error(rc, err, tmp_path, "give --classes FILE")


def test_help_documents_every_flag():
    out = subprocess.run([sys.executable, "-m", "conceptkit.pipelines.cli.main", "build", "--help"], capture_output=True, text=True,
                         check=True).stdout
    from conceptkit.pipelines.cli.main import BUILD_FLAGS

    for flag, _, _ in BUILD_FLAGS:
        assert flag in out
    for flag in ("--config", "--no-cache", "--refresh-cache"):
        assert flag in out


def test_help_shows_readable_metavars():
    """No internal config keys (LLM.FREQUENCY_PENALTY) as placeholders in any help text."""
    import re

    for argv in (["build", "--help"], ["select", "--help"], ["annotate", "--help"], ["llm", "serve", "--help"],
                 ["ls", "push", "--help"], ["ls", "pull", "--help"], ["ls", "serve", "--help"]):
        out = subprocess.run([sys.executable, "-m", "conceptkit.pipelines.cli.main", *argv], capture_output=True,
                             text=True, check=True).stdout
        assert not re.findall(r"\b[A-Z_]+\.[A-Z_]+\b", out), (argv, re.findall(r"\b[A-Z_]+\.[A-Z_]+\b", out))


@pytest.mark.parametrize("argv", [
    ["search", "{missing}", "rain"], ["inspect", "{missing}"], ["card", "{missing}"], ["select", "{missing}"],
    ["annotate", "{missing}", "--items", "{missing}/i.csv"], ["ls", "push", "{missing}"], ["ls", "pull", "{missing}"],
])
def test_every_command_exits_2_on_a_missing_run(argv, tmp_path, capsys):
    rc, err = run_cli([a.format(missing=tmp_path / "nope") for a in argv], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "nope" in err, err


def test_ls_push_without_a_token_is_a_user_error(tmp_path, capsys, monkeypatch):
    from labelstudio_fixtures import write_run

    monkeypatch.delenv("CK_NO_TOKEN", raising=False)
    run = write_run(tmp_path / "runs" / "tiny", run_id="tiny-1")
    rc, err = run_cli(["ls", "push", str(run), "--url", "http://127.0.0.1:9", "--token-env", "CK_NO_TOKEN"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "CK_NO_TOKEN" in err, err


def _readme_commands() -> list[str]:
    """Every `conceptkit ...` command line in the README's code (continuations joined, comments dropped)."""
    from conftest import ROOT

    lines, out, pending, fenced = (ROOT / "README.md").read_text().splitlines(), [], "", False
    for line in lines:
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        text = line.strip()
        if pending:
            text, pending = pending + " " + text, ""
        elif not (fenced or line.startswith("    ")) or not text.startswith(("conceptkit ", "$ conceptkit ")):
            continue
        if text.endswith("\\"):
            pending = text[:-1]
            continue
        out.append(text.removeprefix("$ "))
    return out


def test_every_readme_command_line_parses():
    import shlex

    from conceptkit.pipelines.cli.main import make_parser

    commands = _readme_commands()
    assert len(commands) >= 10
    bad = []
    for command in commands:
        argv = [a for a in shlex.split(command, comments=True)[1:] if a != "&"]
        if "--help" in argv:
            continue
        try:
            make_parser().parse_args(argv)
        except SystemExit:
            bad.append(command)
    assert not bad
