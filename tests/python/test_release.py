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


def test_help_prints_the_usage_and_succeeds():
    """--help and -h are no version: usage on stdout, exit 0, nothing checked or run."""
    for args in (["--help"], ["-h"], ["--notes-only", "--help"]):
        proc = run(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert proc.stdout.startswith("usage: scripts/release.sh"), args
        assert "--notes-only" in proc.stdout and "pyproject.toml says" not in proc.stderr


def test_an_unknown_option_is_a_usage_error_not_a_version():
    proc = run("--notes-only", "--verbose")
    assert proc.returncode == 2 and proc.stderr.startswith("usage: ")


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


def copy_declaring(tmp_path, version, changelog=None):
    """A checkout holding the script, README.md and CHANGELOG.md (or the given text), declaring version."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(SCRIPT, tmp_path / "scripts" / "release.sh")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "CHANGELOG.md").write_text(changelog if changelog is not None else (ROOT / "CHANGELOG.md").read_text())
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "flashkernel"\nversion = "{version}"\n')
    return tmp_path


def test_notes_of_any_release_section(tmp_path):
    """Each section prints on its own, whatever its place in the file (a copy declaring that version)."""
    changelog = (ROOT / "CHANGELOG.md").read_text()
    for version in ("1.0.0", "1.0.4", "1.0.8"):
        proc = run("--notes-only", version, root=copy_declaring(tmp_path, version))
        assert proc.returncode == 0, proc.stderr
        section = changelog.split(f"## v{version}", 1)[1].split("\n## ", 1)[0]
        body = section.split("\n", 1)[1].strip()
        heading, notes = proc.stdout.split("\n", 1)
        assert heading == f"# FlashKernel v{version}" and notes.strip() == body


def test_a_section_marked_in_progress_or_unreleased_is_refused(tmp_path):
    """A heading that says the release is not finished stops the release, whatever else is ready."""
    changelog = (ROOT / "CHANGELOG.md").read_text()
    for marker in ("(in progress)", "(unreleased)", "(Unreleased)"):
        text = re.sub(r"^## v1\.0\.4 .*$", f"## v1.0.4 - Fused Linear + bias + GeLU {marker}", changelog, flags=re.M)
        assert f"## v1.0.4 - Fused Linear + bias + GeLU {marker}" in text
        proc = run("--notes-only", "1.0.4", root=copy_declaring(tmp_path, "1.0.4", text))
        assert proc.returncode == 1, (marker, proc.stdout)
        assert "CHANGELOG.md marks v1.0.4 as not finished" in proc.stderr and marker in proc.stderr
        assert proc.stdout == ""
    proc = run("--notes-only", "1.0.4", root=copy_declaring(tmp_path, "1.0.4", changelog))
    assert proc.returncode == 0, proc.stderr  # the same section without the marker is released


def test_the_changelogs_unfinished_sections_are_refused(tmp_path):
    """This checkout's own markers: every section whose heading carries one is refused."""
    changelog = (ROOT / "CHANGELOG.md").read_text()
    marked = re.findall(r"^## v(\d+\.\d+\.\d+)\b.*\((?:in progress|unreleased)\)", changelog, re.M | re.I)
    for version in marked:
        proc = run("--notes-only", version, root=copy_declaring(tmp_path, version))
        assert proc.returncode == 1, version
        assert f"CHANGELOG.md marks v{version} as not finished" in proc.stderr
