"""scripts/release.sh on the CPU (--notes-only): the checks a release must pass before the GPU
steps, and the notes it prints, on this checkout and on a copy with a planted problem."""
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "release.sh"


def run(*args, root=ROOT):
    return subprocess.run(["bash", str(root / "scripts" / "release.sh"), *args], capture_output=True, text=True,
                          timeout=60)


def declared_version():
    return re.search(r'^version = "(.*)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def test_notes_are_the_changelog_section_of_the_version():
    version = declared_version()
    proc = run("--notes-only", version)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"# FlashKernel v{version}\n")
    section = (ROOT / "CHANGELOG.md").read_text().split(f"## v{version}", 1)[1].split("\n## ", 1)[0]
    first_entry = next(line for line in section.splitlines()[1:] if line.startswith("- "))
    assert first_entry in proc.stdout
    assert "\n## " not in proc.stdout  # stops at the next release's heading


def test_a_version_that_is_not_declared_is_refused():
    proc = run("--notes-only", "9.9.9")
    assert proc.returncode == 1
    assert "pyproject.toml says version" in proc.stderr and "no section '## v9.9.9'" in proc.stderr


def test_usage():
    assert run().returncode == 2


def test_a_placeholder_in_the_docs_is_refused(tmp_path):
    for name in ("pyproject.toml", "CHANGELOG.md", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "release.sh")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("img"))
    (tmp_path / "docs" / "ops" / "new_op.md").write_text("# new op\n\nNumbers: TODO\n")
    proc = run("--notes-only", declared_version(), root=tmp_path)
    assert proc.returncode == 1
    assert "placeholders in the docs" in proc.stderr and "new_op.md:3" in proc.stderr


def changelog_versions(text):
    return re.findall(r"^## v(\d+\.\d+\.\d+)(?: |$)", text, re.M)


def test_the_changelog_has_one_section_per_release_in_the_roadmaps_order():
    versions = changelog_versions((ROOT / "CHANGELOG.md").read_text())
    assert versions == [f"1.0.{i}" for i in range(10)] + ["1.1.0"]
    assert declared_version() in versions


def test_notes_of_any_release_section(tmp_path):
    """Each section prints on its own, whatever its place in the file (a copy declaring that version)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "release.sh")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    shutil.copy(ROOT / "CHANGELOG.md", tmp_path / "CHANGELOG.md")
    for version in ("1.0.0", "1.0.8", "1.1.0"):
        (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "flashkernel"\nversion = "{version}"\n')
        proc = run("--notes-only", version, root=tmp_path)
        assert proc.returncode == 0, proc.stderr
        section = changelog.split(f"## v{version}", 1)[1].split("\n## ", 1)[0]
        body = section.split("\n", 1)[1].strip()
        heading, notes = proc.stdout.split("\n", 1)
        assert heading == f"# FlashKernel v{version}" and notes.strip() == body
