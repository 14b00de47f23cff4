"""Every registered command is wired the same way; the tests loop over the registry, so a command
added later is checked too, and one left out of the registry shows up as missing from the help."""
import re
import subprocess
import sys

import pytest

from tsessm.cli import main
from tsessm.commands import COMMANDS
from tsessm.commands.errors import UsageError, exit_status, run_command

NAMES = [command.NAME for command in COMMANDS]


def _listed(help_text: str) -> set[str]:
    """The sub-commands `tsessm --help` lists under COMMAND."""
    block = help_text.split("  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^    (\S+)", block, flags=re.MULTILINE))


def test_every_command_module_has_the_interface():
    assert len(set(NAMES)) == len(NAMES) == 10
    for command in COMMANDS:
        assert isinstance(command.NAME, str) and callable(command.add_parser) and callable(command.run), command


def test_the_registry_is_what_tsessm_help_lists(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert _listed(capsys.readouterr().out) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_help_exits_0_and_names_the_command(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and out.startswith(f"usage: tsessm {name}"), out[:200]


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_argument_exits_2_with_one_error_line(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([name, "--no-such-flag"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert done.value.code == 2 and "Traceback" not in err
    assert lines[0].startswith("usage: tsessm")
    assert [line for line in lines if "error:" in line] == [lines[-1]] and lines[-1].startswith("tsessm")


def test_python_dash_m_tsessm_is_the_cli():
    done = subprocess.run([sys.executable, "-m", "tsessm", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and _listed(done.stdout) == set(NAMES)


# ----- the one error policy ---------------------------------------------------------------
@pytest.mark.parametrize("error, status, words", [
    (UsageError("--idle-timeout needs --follow"), 2, "tsessm x: error: --idle-timeout needs --follow"),
    (ValueError("column 'nope'\nnot found"), 1, "tsessm x: error: column 'nope' not found"),
    (FileNotFoundError("no such file: a.csv"), 1, "tsessm x: error: no such file: a.csv"),
    (RuntimeError("boom"), 1, "tsessm x: internal error: RuntimeError: boom (rerun with --debug)"),
    (ValueError("cannot reach postgresql://me:s3cret@db/optuna"), 1, "postgresql://me:***@db/optuna"),
])
def test_each_error_is_one_masked_line_and_its_status(error, status, words, capsys):
    assert exit_status(error, "tsessm x") == status
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "s3cret" not in err


def test_a_model_file_error_is_a_bad_argument(capsys):
    from tsessm.persist import ModelFileError

    assert exit_status(ModelFileError("m.tsm is not a tsessm model file"), "tsessm predict") == 2
    assert capsys.readouterr().err == "tsessm predict: error: m.tsm is not a tsessm model file\n"


def test_debug_re_raises_and_the_status_passes_through():
    class Args:
        debug = True

    def fail(args):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_command(fail, Args())
    assert run_command(lambda args: 3, Args()) == 3


def test_errors_are_named_after_the_deepest_command(tmp_path, capsys):
    code = main(["bench", "accuracy", "--settings", "X", "--results", str(tmp_path / "r.csv"), "--no-track"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("tsessm bench accuracy: error:") and err.count("\n") == 1
