"""Every reference in the repository resolves inside the repository.

Docstrings cite the specification as ``docs/method.md §N`` and quote the layout notes'
headings after ``docs/architecture.md``; markdown files link each other with relative paths and
anchors. A reader of a clone must be able to follow each one, so: no file names a document outside
the repository, every cited § is a numbered heading of docs/method.md, every quoted heading of
docs/architecture.md exists, and every relative markdown link names an existing file and heading.
"""

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".sh", ".cfg", ".ini", ".yaml", ".yml"}
# Folders the workspace ignores (.gitignore), for a copy of the tree without git metadata.
IGNORED = {".git", ".venv", "__pycache__", "runs", "data", "dist", "build", ".cache"}
# Built by concatenation so that this file does not contain what it forbids.
OUTSIDE = ["METHOD" + ".md", "ARCHITECTURE" + ".md", "../" + "shared"]

SECTION_REF = re.compile(r"docs/method\.md §(\d+(?:\.\d+)?)((?:[–-]§\d+(?:\.\d+)?)?)")
ARCHITECTURE_REF = re.compile(r'docs/architecture\.md "([^"]+)"')
MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def project_files() -> list[Path]:
    """The files a clone holds (tracked or new, not ignored); a plain walk without git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        paths = [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):
        paths = [
            path
            for path in ROOT.rglob("*")
            if not IGNORED.intersection(path.relative_to(ROOT).parts)
        ]
    return sorted(path for path in paths if path.is_file() and path.suffix in TEXT_SUFFIXES)


def headings(markdown: Path) -> list[str]:
    """The heading texts of a markdown file, leaving out '#' lines inside code fences."""
    found, fenced = [], False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            found.append(match.group(1).strip())
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    kept = (
        char for char in heading.lower() if char in " -_" or unicodedata.category(char)[0] in "LN"
    )
    return "".join(kept).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    """Every anchor GitHub gives the file's headings (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(markdown):
        base = slug(heading)
        count = seen.get(base, 0)
        result.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return result


def method_sections() -> set[str]:
    """The section numbers of docs/method.md: "4" for "## 4. ...", "4.2" for "### 4.2 ..."."""
    numbers = set()
    for heading in headings(ROOT / "docs" / "method.md"):
        if match := re.match(r"(\d+(?:\.\d+)?)\.?\s", heading):
            numbers.add(match.group(1))
    return numbers


FILES = project_files()


def test_the_files_are_found():
    """The scan sees the repository: a listing that came back empty would pass everything."""
    names = {path.relative_to(ROOT).as_posix() for path in FILES}
    assert {"README.md", "docs/method.md", "docs/architecture.md", "pyproject.toml"} <= names
    assert sum(path.suffix == ".py" for path in FILES) > 50


def test_nothing_points_outside_the_repository():
    offenders = [
        f"{path.relative_to(ROOT)}: {needle}"
        for path in FILES
        for needle in OUTSIDE
        if needle in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert not offenders, "references to files outside the repository:\n" + "\n".join(offenders)


def test_method_has_its_numbered_sections():
    sections = method_sections()
    assert {str(n) for n in range(1, 9)} <= sections, sorted(sections)


def test_every_cited_method_section_exists():
    sections = method_sections()
    cited, missing = 0, []
    for path in FILES:
        for match in SECTION_REF.finditer(path.read_text(encoding="utf-8", errors="replace")):
            numbers = [match.group(1)] + re.findall(r"\d+(?:\.\d+)?", match.group(2))
            cited += 1
            missing += [f"{path.relative_to(ROOT)}: §{n}" for n in numbers if n not in sections]
    assert cited > 50, "the docstrings cite docs/method.md; the pattern finds none"
    assert not missing, "cited sections that docs/method.md does not have:\n" + "\n".join(missing)


def test_every_bare_section_sign_in_method_exists():
    """Inside docs/method.md a section is cited as "§N" alone."""
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"§(\d+(?:\.\d+)?)", text))
    assert cited, "docs/method.md cites its own sections"
    assert cited <= method_sections(), sorted(cited - method_sections())


def test_every_quoted_architecture_heading_exists():
    present = set(headings(ROOT / "docs" / "architecture.md"))
    quoted = {
        (path.relative_to(ROOT).as_posix(), name)
        for path in FILES
        for name in ARCHITECTURE_REF.findall(path.read_text(encoding="utf-8", errors="replace"))
    }
    assert quoted, "docstrings quote docs/architecture.md's headings; the pattern finds none"
    missing = [f"{where}: {name!r}" for where, name in sorted(quoted) if name not in present]
    assert not missing, "headings docs/architecture.md does not have:\n" + "\n".join(missing)


def relative_links(markdown: Path) -> list[tuple[str, Path, str]]:
    """(link as written, file it names, anchor or '') for every relative link outside code."""
    links, fenced = [], False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        for target in MD_LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            name, _, anchor = target.partition("#")
            links.append((target, markdown.parent / name if name else markdown, anchor))
    return links


@pytest.mark.parametrize(
    "markdown",
    [path for path in FILES if path.suffix == ".md"],
    ids=lambda path: path.relative_to(ROOT).as_posix(),
)
def test_relative_links_resolve(markdown: Path):
    broken = []
    for target, path, anchor in relative_links(markdown):
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading with that anchor in {path.name}")
    assert not broken, f"{markdown.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_slug_follows_github():
    """Examples whose anchors GitHub renders (checked on github.com's markdown)."""
    assert slug("4.3 Scoring only the masked positions (`head_loss.py`)") == (
        "43-scoring-only-the-masked-positions-head_losspy"
    )
    assert slug("Zero-shot perplexity: `apps/eval --suite zero-shot`") == (
        "zero-shot-perplexity-appseval---suite-zero-shot"
    )
    assert slug("Against the MDLM a user would run (issue 26)") == (
        "against-the-mdlm-a-user-would-run-issue-26"
    )
