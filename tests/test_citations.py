"""User-facing text cites primary sources only: papers (with section or table), released configs and code (by
repository and path), model cards. Nothing a user reads may point at notes that live outside the repository,
and every recorded published size names its source."""

import pathlib
import re
import subprocess

import pytest

from zoo import presets

ROOT = pathlib.Path(__file__).parent.parent

# Notes kept outside the repository; split so that this file does not match itself.
OFF_REPO = re.compile("|".join(["reference" + "_configs", "shared" + "/reference", "lecture" + "03-"]))


def user_facing(path: str) -> bool:
    top, _, rest = path.partition("/")
    if not rest:
        return path in ("README.md", "ARCHITECTURE.md", "train.py", "sample.py", "evaluate.py")
    return (
        (top == "configs" and path.endswith(".yaml"))
        or (top == "zoo" and path.endswith(".py"))
        or (top == "notebooks" and path.endswith(".ipynb"))
        or top in ("benchmarks", "tools")
    )


def tracked_user_facing() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"needs a git checkout: {e}")
    return sorted(path for path in out.split("\0") if path and user_facing(path))


def test_user_facing_files_cite_no_off_repo_notes():
    paths = tracked_user_facing()
    assert any(p.startswith("configs/") for p in paths) and "README.md" in paths, paths
    hits = []
    for path in paths:
        file = ROOT / path
        if not file.is_file():  # deleted in the working tree, not yet in the index
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary (figures, data)
            continue
        hits += [
            f"{path}:{n}: {line.strip()[:120]}" for n, line in enumerate(text.splitlines(), 1) if OFF_REPO.search(line)
        ]
    assert not hits, "cite the primary source (paper + table, repo + path) instead of:\n" + "\n".join(hits)


@pytest.mark.parametrize("name", [n for n in presets.list_presets() if presets.published(n) is not None])
def test_published_size_names_its_source(name):
    source = presets.published(name).source
    assert source.strip(), f"{name}: published.source is empty"
    assert not OFF_REPO.search(source), f"{name}: {source}"
