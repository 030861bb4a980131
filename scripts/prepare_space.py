"""Prepare the Hugging Face Space's files (README.md front matter, requirements.txt) for
its hardware.

Which hardware to pick:

- ``zerogpu``: the only free Gradio hosting since July 2026 (free accounts: up to 2 Spaces).
  Each request gets an H200 slice from the visitor's daily quota, the CPU when it is spent.
  Python 3.12, torch 2.11.0 (a version ZeroGPU supports); pick ZeroGPU in the Space's settings.
- ``cpu-basic``: paid plans. 2 shared vCPUs for every visitor, no quota; the repository as
  committed (PyTorch's CPU index: a 192 MB torch wheel instead of PyPI's 2.7 GB CUDA build).
- ``gpu``: paid plans, a dedicated GPU (``t4-small``) for everyone, no quota: the CPU index line
  dropped, so pip installs PyPI's CUDA build of the same torch.

Usage (from anywhere; the repository is the folder above this script):

    python scripts/prepare_space.py zerogpu --out ../xviz-space   # or cpu-basic, gpu
    python scripts/prepare_space.py zerogpu                       # print, write nothing
    python scripts/prepare_space.py zerogpu --requirements        # its requirements.txt only

With ``--out`` (a folder that is empty or does not exist) it copies every file ``git ls-files``
lists (a walk of the tree without ``.git``, ``.venv*`` and ``__pycache__`` where git is not
available), then writes the folder's README.md and requirements.txt for the hardware. The
repository's own files are never changed. No third-party imports: the front matter is edited as
lines of text (a key is a line ``key: value`` between the first two ``---`` lines).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARDWARE = ("zerogpu", "cpu-basic", "gpu")

ZEROGPU_PYTHON = '"3.12"'  # ZeroGPU runs Python 3.12.12 or 3.10.13
ZEROGPU_TORCH = "2.11.0"  # a torch version ZeroGPU supports (it preinstalls torch)
# Pins whose release requires Python >= 3.11 (numpy 2.3+, pyarrow 26+: no cp310 wheels on
# PyPI), and the newest release for ZeroGPU's other Python, 3.10.13.
PY310_PINS = {"numpy": "2.2.6", "pyarrow": "25.0.1"}
ZEROGPU_COMMENT = "# Hardware: ZeroGPU (pick it in the Space's settings)"
GPU_HARDWARE = "t4-small"

HEADERS = {
    "zerogpu": (
        "# For a ZeroGPU Space (Python 3.12 or 3.10): PyPI's CUDA build of a torch ZeroGPU\n"
        "# supports, no `spaces` (the Spaces image installs it). Written by\n"
        "# scripts/prepare_space.py from the repository's requirements.txt.\n"
    ),
    "cpu-basic": (
        "# For a cpu-basic Space: the repository's requirements.txt as it is (PyTorch's CPU\n"
        "# index). Written by scripts/prepare_space.py.\n"
    ),
    "gpu": (
        "# For a dedicated GPU Space (e.g. t4-small): no CPU index, so pip installs PyPI's CUDA\n"
        "# build of torch. Written by scripts/prepare_space.py from the repository's\n"
        "# requirements.txt.\n"
    ),
}

INDEX_OPTION = re.compile(r"^\s*--(extra-)?index-url\b")
KEY_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*):(\s|$)")


class PrepareError(Exception):
    """A file this script cannot transform, or an ``--out`` it must not write to."""


def _split_front_matter(readme_text: str) -> tuple[list[str], list[str], str]:
    """``(opening, keys, rest)``: the ``---`` line, the lines between the first two ``---``
    lines, and the text from the closing ``---`` line on (all with their line endings)."""
    lines = readme_text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise PrepareError("README.md does not start with a front matter block (a '---' line)")
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return lines[:1], lines[1:i], "".join(lines[i:])
    raise PrepareError("README.md's front matter has no closing '---' line")


def _key_index(lines: list[str], key: str) -> int | None:
    for i, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if match and match.group(1) == key:
            return i
    return None


def _newline(lines: list[str]) -> str:
    return "\r\n" if lines and lines[0].endswith("\r\n") else "\n"


def _set_key(lines: list[str], key: str, value: str) -> None:
    """Set ``key: value`` in place of the key's line, or at the end where it has none."""
    line = f"{key}: {value}{_newline(lines)}"
    i = _key_index(lines, key)
    if i is None:
        lines.append(line)
    else:
        lines[i] = line


def front_matter(readme_text: str, hardware: str) -> str:
    """The whole README text with its front matter set for ``hardware`` (the rest unchanged)."""
    _check_hardware(hardware)
    opening, lines, rest = _split_front_matter(readme_text)
    lines = list(lines)
    if hardware == "cpu-basic":
        _set_key(lines, "suggested_hardware", "cpu-basic")
    elif hardware == "gpu":
        _set_key(lines, "suggested_hardware", GPU_HARDWARE)
    else:  # zerogpu: no suggested_hardware value names it; it is picked in the settings
        _set_key(lines, "python_version", ZEROGPU_PYTHON)
        comment = ZEROGPU_COMMENT + _newline(lines)
        i = _key_index(lines, "suggested_hardware")
        if i is None:
            lines.append(comment)
        else:
            lines[i] = comment
    return "".join(opening + lines) + rest


def _requirement_name(line: str) -> str | None:
    """The normalised project name a requirement line names (None for comments, options)."""
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    if not match or line.lstrip().startswith(("#", "-")):
        return None
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _pinned_version(line: str) -> str:
    match = re.match(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*==\s*([^\s;#]+)", line)
    if not match:
        raise PrepareError(f"requirements.txt: expected an exact pin (name==version): {line!r}")
    return match.group(1)


def _drop_index(lines: list[str]) -> list[str]:
    """Without the ``--extra-index-url`` line and the comment lines just above it that talk
    about it (the block's lines from the first one that mentions an index on)."""
    out: list[str] = []
    for line in lines:
        if not INDEX_OPTION.match(line):
            out.append(line)
            continue
        start = len(out)
        while start > 0 and out[start - 1].lstrip().startswith("#"):
            start -= 1
        block = out[start:]
        about = [i for i, comment in enumerate(block) if "index" in comment.lower()]
        if about:
            del out[start + about[0] :]
    return out


def requirements(text: str, hardware: str) -> str:
    """The requirements.txt for ``hardware`` made from the repository's ``text``."""
    _check_hardware(hardware)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if hardware in ("zerogpu", "gpu"):
        lines = _drop_index(lines)
    if hardware == "zerogpu":
        out: list[str] = []
        seen: set[str] = set()
        for line in lines:
            name = _requirement_name(line)
            if name == "spaces":
                continue
            if name == "torch":
                _pinned_version(line)
                out.append(f"torch=={ZEROGPU_TORCH}\n")
            elif name in PY310_PINS:
                version = _pinned_version(line)
                out.append(f'{name}=={version}; python_version >= "3.11"\n')
                out.append(f'{name}=={PY310_PINS[name]}; python_version < "3.11"\n')
            else:
                out.append(line)
            seen.add(name or "")
        missing = {"torch", "numpy"} - seen
        if missing:
            raise PrepareError(f"requirements.txt pins no {' or '.join(sorted(missing))}")
        lines = out
    return HEADERS[hardware] + "".join(lines)


def _check_hardware(hardware: str) -> None:
    if hardware not in HARDWARE:
        raise ValueError(f"hardware must be one of {', '.join(HARDWARE)}, not {hardware!r}")


def _git_files(root: Path) -> list[Path] | None:
    """The files ``git ls-files`` lists under ``root`` (None where git is not available)."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z"],
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    names = [name for name in result.stdout.decode("utf-8").split("\0") if name]
    if not names:  # a repository with nothing added yet: the tree, as without git
        return None
    # Not the ones deleted from the work tree, nor submodules (folders).
    return [Path(name) for name in names if (root / name).is_file() or (root / name).is_symlink()]


def _walk_files(root: Path, skip: Path | None = None) -> list[Path]:
    """Every file under ``root`` but ``.git``, ``.venv*``, ``__pycache__`` (and ``skip``)."""
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(
            d
            for d in dirs
            if d != ".git"
            and not d.startswith(".venv")
            and d != "__pycache__"
            and (skip is None or (here / d).resolve() != skip)
        )
        files.extend((here / name).relative_to(root) for name in sorted(names))
    return files


def space_files(root: Path = ROOT, skip: Path | None = None) -> list[Path]:
    """The files (relative to ``root``) the Space gets: git's, or the tree's without git."""
    files = _git_files(root)
    return _walk_files(root, skip) if files is None else files


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise PrepareError(f"--out {out} is not empty: give an empty or new folder")


def prepare(hardware: str, out: Path, root: Path = ROOT) -> list[Path]:
    """Copy the Space's files into ``out`` and write its README.md and requirements.txt."""
    out = out.resolve()
    _check_out(out)
    readme = front_matter((root / "README.md").read_bytes().decode("utf-8"), hardware)
    reqs = requirements((root / "requirements.txt").read_bytes().decode("utf-8"), hardware)
    files = space_files(root, skip=out)
    out.mkdir(parents=True, exist_ok=True)
    for name in files:
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target, follow_symlinks=False)
    for name, text in (("README.md", readme), ("requirements.txt", reqs)):
        target = out / name
        if target.is_symlink():
            target.unlink()
        target.write_bytes(text.encode("utf-8"))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="prepare_space.py",
        description="Write the Hugging Face Space's files for its hardware (see the docstring).",
    )
    parser.add_argument("hardware", choices=HARDWARE, help="the Space's hardware")
    parser.add_argument(
        "--out",
        type=Path,
        help="an empty or new folder to write the Space into (without it: print, write nothing)",
    )
    parser.add_argument(
        "--requirements",
        action="store_true",
        help="print only the requirements.txt (scripts/test_zerogpu.sh installs it)",
    )
    args = parser.parse_args(argv)
    try:
        if args.requirements:
            text = (ROOT / "requirements.txt").read_bytes().decode("utf-8")
            print(requirements(text, args.hardware), end="")
            return 0
        if args.out is None:
            readme = front_matter((ROOT / "README.md").read_bytes().decode("utf-8"), args.hardware)
            opening, keys, rest = _split_front_matter(readme)
            reqs = requirements(
                (ROOT / "requirements.txt").read_bytes().decode("utf-8"), args.hardware
            )
            closing = rest.splitlines(keepends=True)[0]
            print(f"# README.md front matter ({args.hardware})")
            print("".join(opening + keys) + closing, end="")
            print()
            print("# requirements.txt")
            print(reqs, end="")
            return 0
        files = prepare(args.hardware, args.out)
    except PrepareError as error:
        print(f"prepare_space.py: error: {error}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {len(files)} files for {args.hardware}, README.md front matter and "
        "requirements.txt written"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
