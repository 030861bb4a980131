"""scripts/prepare_space.py: the Space's files for each hardware, from the repository's own."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "prepare_space.py"
KINDS = ("zerogpu", "cpu-basic", "gpu")
README = (ROOT / "README.md").read_text(encoding="utf-8")
REQUIREMENTS = (ROOT / "requirements.txt").read_text(encoding="utf-8")


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_space", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_space = _load_script()


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def split_readme(text: str) -> tuple[dict[str, str], list[str], str]:
    """``(keys, lines, rest)``: the front matter's ``key: value`` pairs, its lines, and the text
    after its closing ``---`` line."""
    lines = text.splitlines(keepends=True)
    assert lines[0] == "---\n"
    end = next(i for i in range(1, len(lines)) if lines[i] == "---\n")
    block = [line.rstrip("\n") for line in lines[1:end]]
    keys = {}
    for line in block:
        if line and not line.startswith(("#", " ")):
            key, _, value = line.partition(":")
            keys[key] = value.strip()
    return keys, block, "".join(lines[end + 1 :])


def pins(text: str) -> list[str]:
    """The requirement lines (no comments, no options), as written."""
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "-"))
    ]


def parsed(text: str) -> list[Requirement]:
    return [Requirement(line) for line in pins(text)]


def applying(text: str, python: str, name: str) -> list[str]:
    """The versions of ``name`` that apply on ``python`` (their markers evaluated)."""
    return [
        str(req.specifier)
        for req in parsed(text)
        if req.name == name
        and (req.marker is None or req.marker.evaluate({"python_version": python}))
    ]


@pytest.fixture(scope="module")
def spaces(tmp_path_factory) -> dict[str, Path]:
    """The script run for real, once per hardware, into a new folder each."""
    base = tmp_path_factory.mktemp("spaces")
    out = {}
    for kind in KINDS:
        result = run_script(kind, "--out", str(base / kind), cwd=base)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        out[kind] = base / kind
    return out


def written(spaces: dict[str, Path], kind: str) -> tuple[str, str]:
    folder = spaces[kind]
    return (
        (folder / "README.md").read_text(encoding="utf-8"),
        (folder / "requirements.txt").read_text(encoding="utf-8"),
    )


def test_repository_is_the_cpu_space():
    keys, _, _ = split_readme(README)
    assert keys["suggested_hardware"] == "cpu-basic"
    assert keys["python_version"] == '"3.11"'
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in REQUIREMENTS.splitlines()
    assert "torch==2.13.0" in pins(REQUIREMENTS)


@pytest.mark.parametrize("kind", KINDS)
def test_readme_rest_and_header(spaces, kind):
    readme, reqs = written(spaces, kind)
    keys, _, rest = split_readme(readme)
    repo_keys, _, repo_rest = split_readme(README)
    assert rest == repo_rest
    for key in ("title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "app_file"):
        assert keys[key] == repo_keys[key]
    assert keys["license"] == repo_keys["license"]
    assert keys["short_description"] == repo_keys["short_description"]
    header = reqs.splitlines()[:3]
    assert all(line.startswith("#") for line in header[:2])
    assert "scripts/prepare_space.py" in " ".join(header)
    label = {"zerogpu": "ZeroGPU", "cpu-basic": "cpu-basic", "gpu": "GPU"}[kind]
    assert label in reqs.splitlines()[0]


def test_zerogpu(spaces):
    readme, reqs = written(spaces, "zerogpu")
    keys, block, _ = split_readme(readme)
    assert keys["python_version"] == '"3.12"'
    assert "suggested_hardware" not in keys
    assert "# Hardware: ZeroGPU (pick it in the Space's settings)" in block
    assert "--extra-index-url" not in reqs
    assert "download.pytorch.org" not in reqs
    lines = pins(reqs)
    assert "torch==2.11.0" in lines
    assert not any(req.name == "spaces" for req in parsed(reqs))
    assert 'numpy==2.4.6; python_version >= "3.11"' in lines
    assert 'numpy==2.2.6; python_version < "3.11"' in lines
    assert 'pyarrow==26.0.1; python_version >= "3.11"' in lines
    assert 'pyarrow==25.0.1; python_version < "3.11"' in lines
    split = ("torch", "numpy", "pyarrow")
    others = [line for line in pins(REQUIREMENTS) if Requirement(line).name not in split]
    assert others  # pillow, gradio, ...
    for line in others:
        assert line in lines
    assert len(lines) == len(others) + 5  # torch, and two lines each for numpy and pyarrow


# numpy 2.3+ and pyarrow 26+ have no wheels for Python 3.10 (ZeroGPU's other Python).
@pytest.mark.parametrize(
    ("python", "numpy", "pyarrow"),
    [("3.10", "==2.2.6", "==25.0.1"), ("3.12", "==2.4.6", "==26.0.1")],
)
def test_zerogpu_pins_per_python(spaces, python, numpy, pyarrow):
    _, reqs = written(spaces, "zerogpu")
    assert applying(reqs, python, "numpy") == [numpy]
    assert applying(reqs, python, "pyarrow") == [pyarrow]
    assert applying(reqs, python, "torch") == ["==2.11.0"]


def test_cpu_basic(spaces):
    readme, reqs = written(spaces, "cpu-basic")
    keys, _, _ = split_readme(readme)
    assert keys["suggested_hardware"] == "cpu-basic"
    assert keys["python_version"] == '"3.11"'
    assert pins(reqs) == pins(REQUIREMENTS)
    assert [r for r in reqs.splitlines() if r.startswith("--")] == [
        r for r in REQUIREMENTS.splitlines() if r.startswith("--")
    ]
    assert reqs.endswith(REQUIREMENTS)  # the repository's file, a header above it
    assert readme == README


def test_gpu(spaces):
    readme, reqs = written(spaces, "gpu")
    keys, _, _ = split_readme(readme)
    assert keys["suggested_hardware"] == "t4-small"
    assert keys["python_version"] == '"3.11"'
    assert "--extra-index-url" not in reqs
    assert "download.pytorch.org" not in reqs
    assert pins(reqs) == pins(REQUIREMENTS)
    assert "torch==2.13.0" in pins(reqs)


@pytest.mark.parametrize("kind", KINDS)
def test_files_copied(spaces, kind):
    folder = spaces[kind]
    for name in ("app.py", "xviz/__init__.py", "xviz/data/examples/cat.jpg"):
        assert (folder / name).read_bytes() == (ROOT / name).read_bytes(), name
    assert not (folder / ".git").exists()
    assert not list(folder.rglob("__pycache__"))
    assert not any(path.name.startswith(".venv") for path in folder.iterdir())


def test_repository_unchanged(spaces):
    assert (ROOT / "README.md").read_text(encoding="utf-8") == README
    assert (ROOT / "requirements.txt").read_text(encoding="utf-8") == REQUIREMENTS


def test_non_empty_out_refused(tmp_path):
    out = tmp_path / "space"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    result = run_script("zerogpu", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not empty" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine\n"


def test_print_without_out(tmp_path):
    result = run_script("zerogpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'python_version: "3.12"' in result.stdout
    assert "torch==2.11.0" in result.stdout
    assert "# Hardware: ZeroGPU" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_pure_functions():
    readme = '---\ntitle: t\npython_version: "3.11"\nsuggested_hardware: cpu-basic\n---\n# x\n'
    out = prepare_space.front_matter(readme, "zerogpu")
    assert out == (
        '---\ntitle: t\npython_version: "3.12"\n'
        "# Hardware: ZeroGPU (pick it in the Space's settings)\n---\n# x\n"
    )
    assert "suggested_hardware: t4-small\n" in prepare_space.front_matter(readme, "gpu")
    # Only the front matter's keys: a `suggested_hardware:` line below it stays.
    body = readme + "suggested_hardware: cpu-basic\n"
    assert prepare_space.front_matter(body, "gpu").endswith("# x\nsuggested_hardware: cpu-basic\n")
    with pytest.raises(prepare_space.PrepareError):
        prepare_space.front_matter("# no front matter\n", "gpu")
    reqs = "# deps\n# the CPU index\n--extra-index-url https://x/cpu\ntorch==2.13.0\nspaces==1\nnumpy==2.4.6\n"
    assert prepare_space.requirements(reqs, "zerogpu").endswith(
        '# deps\ntorch==2.11.0\nnumpy==2.4.6; python_version >= "3.11"\n'
        'numpy==2.2.6; python_version < "3.11"\n'
    )
    assert prepare_space.requirements(reqs, "gpu").endswith(
        "# deps\ntorch==2.13.0\nspaces==1\nnumpy==2.4.6\n"
    )
    with pytest.raises(ValueError):
        prepare_space.requirements(reqs, "tpu")


def test_walk_without_git(tmp_path):
    for name in (
        "app.py",
        "xviz/__init__.py",
        ".git/HEAD",
        ".venv-zerogpu/x",
        "xviz/__pycache__/a.pyc",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    files = prepare_space._walk_files(tmp_path)
    assert sorted(map(str, files)) == ["app.py", "xviz/__init__.py"]
