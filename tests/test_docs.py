"""The README and docs/: links that resolve, generated pages that match their sources, the entrance kept short,
and the package layout the architecture page describes."""

import re
from pathlib import Path

import pytest

from an2dl_kit.task import TASKS
from an2dl_kit.tasks.describe import settings_markdown
from bench.results import documents, stale

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
KAGGLE_LOOP = ("settings", "session", "loop", "bundle", "banner", "provenance", "preflight", "quota", "variants",
               "ledger", "runs", "run_local")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub writes it: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8")))


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        if re.match(r"^[a-z]+:", target):  # another site: not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target} (no heading #{anchor})")
    return broken


def test_slug_follows_github():
    assert slug("Where the input pipeline's time went") == "where-the-input-pipelines-time-went"
    assert slug("The `local` recipe") == "the-local-recipe"
    assert slug("cells data") == "cells-data"


def test_a_missing_file_or_heading_is_reported(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n[ok](#title) [bad](#nope) [gone](b.md) [web](https://x.y/z)\n"
                                   "```\n[in code](nowhere.md)\n```\n")
    assert broken_links(tmp_path / "a.md") == ["#nope (no heading #nope)", "b.md (no such file)"]


@pytest.mark.parametrize("path", documents(REPO), ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves(path):
    assert broken_links(path) == []


def test_the_docs_link_from_the_readme_reaches_every_page():
    reached = {(REPO / target.partition("#")[0]).resolve() for target in links(REPO / "README.md")}
    pages = {path.resolve() for path in (REPO / "docs").rglob("*.md")}
    assert pages - reached == set()


def test_readme_is_an_entrance():
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def test_generated_tables_match_their_records():
    assert {str(path.relative_to(REPO)) for path in stale(REPO)} == set()


def test_configuration_reference_is_generated_from_the_configuration():
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == settings_markdown(TASKS.choices), "stale: run `make docs`"


def test_package_layout_shows_the_layers():
    top = sorted(path.name for path in (REPO / "an2dl_kit").glob("*.py"))
    assert len(top) <= 20, top
    assert all((REPO / "an2dl_kit" / "kaggle" / f"{name}.py").is_file() for name in KAGGLE_LOOP)
    assert not any(name.startswith(("kaggle_", "bundle", "quota", "ledger")) for name in top)


def test_benchmark_modules_stay_short():
    long = [path.name for path in (REPO / "bench").glob("*.py") if len(path.read_text().splitlines()) >= 300]
    assert long == []
