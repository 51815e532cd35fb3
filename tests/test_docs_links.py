"""Every link in the README, docs/ and BENCHMARKS.md resolves, and every repository path they name
in backticks exists: a file that moved takes its mentions with it.

A link is ``[text](target)``: a relative target must name a file of the repository and, with
``#anchor``, a heading of that file (GitHub's slug: lower case, punctuation dropped, spaces to ``-``).
A path is a backticked word that starts with one of the project's top-level folders
(``memprof/engines/fake.py``, ``docs/usage.md``); a path with a placeholder (``<``, ``*``, ``{``) is a pattern,
not a file, and is skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")])
TOP_FOLDERS = ("memprof/", "meft/", "docs/", "benchmarks/", "tests/", "reports/", "examples/", ".ci/")
#: what the tool writes when it runs (git ignores it): an output, not a file of the repository
OUTPUTS = ("reports/latest",)

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, everything but letters, digits, spaces, ``-`` and
    ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", page.read_text())) if not re.match(r"[a-z]+:", t)]


def paths(page: Path) -> list[str]:
    found = []
    for word in CODE.findall(page.read_text()):
        word = word.split("::")[0].rstrip(".,:;")
        if word.startswith(TOP_FOLDERS) and not word.startswith(OUTPUTS) and not re.search(r"[<*{$]", word):
            found.append(word)
    return found


def broken_link(page: Path, target: str) -> str | None:
    file, _, anchor = target.partition("#")
    path = (page.parent / file).resolve() if file else page
    if not path.exists():
        return f"{target}: no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    if anchor and path.suffix == ".md" and anchor not in anchors(path):
        return f"{target}: no heading #{anchor} in {path.name}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    broken = [b for t in links(page) if (b := broken_link(page, t))]
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_path_exists(page):
    missing = sorted({p for p in paths(page) if not (ROOT / p.rstrip("/")).exists()})
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_the_checks_find_broken_links_and_paths(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# A heading, with punctuation!\n")
    page.write_text(
        "[ok](other.md) [ok](other.md#a-heading-with-punctuation) [web](https://example.org)\n"
        "[gone](missing.md) [bad anchor](other.md#nope)\n"
        "`memprof/no_such_module.py` `memprof/errors.py` `memprof/<name>.py` `reports/latest`\n"
        "```\n[inside a fence](not-checked.md)\n```\n"
    )
    broken = [b for t in links(page) if (b := broken_link(page, t))]
    assert len(broken) == 2 and "missing.md" in broken[0] and "#nope" in broken[1]
    assert paths(page) == ["memprof/no_such_module.py", "memprof/errors.py"]
    assert slug("3. The closed form (`memprof formula`)") == "3-the-closed-form-memprof-formula"
