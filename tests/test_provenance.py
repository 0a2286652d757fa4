"""benchmarks/provenance.py: the code commit that reports and benchmarks name moves with
code changes only, so reports regenerated over several report-only commits still name one."""
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from provenance import code_commit  # noqa: E402


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}).stdout.strip()


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "--short", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    return tmp_path


def test_report_and_prose_commits_do_not_move_the_code_commit(repo):
    code = _commit(repo, {"annsnn/a.py": "x = 1\n", "reports/generate.py": "", "benchmarks/run.py": ""}, "code")
    _commit(repo, {"reports/cifar10.md": "table\n", "README.md": "prose\n", "benchmarks/results/speed.json": "{}", "benchmarks/RESULTS.md": "rows\n"}, "outputs")
    assert code_commit(repo) == code


@pytest.mark.parametrize("path", ["annsnn/a.py", "cli/main.py", "model_zoo/zoo.py", "pyproject.toml", "benchmarks/run.py", "reports/generate.py"])
def test_a_change_to_code_moves_it_and_an_uncommitted_one_marks_it_dirty(repo, path):
    first = _commit(repo, {"annsnn/a.py": "x = 1\n", "README.md": "a\n"}, "code")
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text("changed = True\n")
    if path == "annsnn/a.py":
        assert code_commit(repo) == first + "+dirty"
    second = _commit(repo, {}, "change")
    assert second != first and code_commit(repo) == second
    (repo / path).write_text("changed = 2\n")
    assert code_commit(repo) == second + "+dirty"


def test_outside_a_checkout_it_says_unknown(tmp_path):
    assert code_commit(tmp_path) == "unknown"
