"""The README and changelog as a user reads them (issue 24 item 7: a link that left the
repository, a changelog written as a log of issue numbers)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_links_only_to_files_in_the_repository():
    links = [m.group(1) for m in LINK.finditer((ROOT / "README.md").read_text())]
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local, "the README links to no file: the pattern is wrong"
    for link in local:
        target = (ROOT / link.split("#")[0]).resolve()
        assert target.is_relative_to(ROOT), f"{link} leaves the repository"
        assert target.exists(), f"{link} does not exist"


def test_no_page_points_outside_the_repository():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        assert "../shared" not in page.read_text(), f"{page.name} points outside the repository"


def test_the_changelog_is_written_for_users_not_as_a_work_log():
    text = (ROOT / "docs" / "changelog.md").read_text()
    assert not re.search(r"\bissues? #?\d+", text, flags=re.IGNORECASE)
    assert len(re.findall(r"^### ", text, flags=re.MULTILINE)) >= 3  # grouped by topic
