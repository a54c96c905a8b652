"""The CLI parser: every subcommand's --help works and teaches; usage errors exit 2."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cli.main import COMMANDS as SUBCOMMANDS
from cli.main import main

COMMANDS = [
    ["publish"],
    ["preview"],
    ["keys"],
    ["keys", "generate"],
    ["keys", "show"],
    ["verify"],
    ["replay"],
]


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ["publish", "preview", "keys", "verify", "replay", *SUBCOMMANDS]:
        assert name in out
    assert "make up" in out
    assert "examples:" in out


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_every_subcommand_help_has_description_and_examples(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: stella-sched " + " ".join(command))
    assert "example" in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nonsense"],
        ["publish", "sbomx", "x.json"],
        ["publish", "osv"],
        ["preview", "--sbom", "a.json"],
        ["verify", "--public-keys", "k"],
        ["verify", "--file", "f", "--topic", "--public-keys", "k"],
        ["replay", "--group", "g", "--to", "yesterday"],
        ["replay", "--group", "g", "--to", "offset:-1"],
        ["replay", "--group", "g", "--to", "timestamp:not-a-time"],
        ["publish", "sbom", "--observed-at", "noon", "x.json"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_missing_path_is_a_usage_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "osv", "--dry-run", "/no/such/file.json"]) == 2
    assert "/no/such/file.json" in capsys.readouterr().err


def test_external_command_that_is_missing_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # cli.demo is written elsewhere; when it cannot be imported, routing says so instead of a traceback.
    monkeypatch.setitem(sys.modules, "cli.demo", None)
    assert main(["demo"]) == 2
    assert "cli.demo" in capsys.readouterr().err


def test_external_commands_receive_their_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list[list[str]] = []
    fake = types.ModuleType("cli.consume")
    fake.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cli.consume", fake)
    fake_worker = types.ModuleType("agents.worker")
    fake_worker.main = lambda argv: seen.append(argv) or 5  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "agents.worker", fake_worker)
    assert main(["tail", "--public-keys", "k"]) == 0
    assert main(["query", "runs", "--limit", "3"]) == 0
    assert main(["worker", "--help"]) == 5
    assert seen == [["tail", "--public-keys", "k"], ["query", "runs", "--limit", "3"], ["--help"]]


def test_help_is_fast_and_imports_no_heavy_modules() -> None:
    code = (
        "import sys, io, contextlib\n"
        "from cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "heavy = [m for m in ('aiokafka', 'pydantic', 'streams.preview', 'nacl', 'pymongo') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("argv", [["tail", "--help"], ["query", "--help"], ["deadletter", "--help"]])
def test_help_of_consume_and_deadletter(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert "example" in capsys.readouterr().out


def test_query_with_unreachable_mongo_exits_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGO_URL", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300")
    assert main(["query", "runs"]) == 3
    err = capsys.readouterr().err
    assert "make up" in err
    assert "MONGO_URL" in err
