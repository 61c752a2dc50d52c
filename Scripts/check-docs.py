#!/usr/bin/env python3
"""Checks what the repository says to its users, offline, in a second:

1. every relative link in README.md, CHANGELOG.md, Docs/*.md, Examples/**/README.md and the DocC articles
   (Sources/*/*.docc/**/*.md) resolves to a file or folder inside the repository (http(s), mailto and in-page
   anchors are not followed; a link may not leave the repository);
2. a fenced code block preceded by `<!-- snippet: PATH -->` is, line for line (indentation aside), a run of
   consecutive lines of PATH, so a snippet that compiles stays the one the page shows;
3. no Package.swift points at the team's notes (CONVENTIONS.md, ../shared).

Prints each problem as FILE:LINE: ..., then a count; exits 1 if there was any.

    python3 Scripts/check-docs.py
"""
import glob
import os
import re
import sys

ROOT = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|!\[[^\]]*\]\(\s*([^)\s]+)\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)")
SNIPPET = re.compile(r"<!--\s*snippet:\s*(\S+)\s*-->")


def pages():
    patterns = ["README.md", "CHANGELOG.md", "Docs/**/*.md", "Examples/**/README.md", "Sources/*/*.docc/**/*.md"]
    found = set()
    for pattern in patterns:
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            if "/.build" not in path:
                found.add(os.path.realpath(path))
    return sorted(found)


def check_link(page, line_number, target, problems):
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
        return  # a URL (https:, mailto:, doc:) or an anchor in the page
    path = target.split("#", 1)[0].split("?", 1)[0]
    if not path:
        return
    resolved = os.path.realpath(os.path.join(ROOT, path.lstrip("/")) if path.startswith("/") else
                                os.path.join(os.path.dirname(page), path))
    where = f"{os.path.relpath(page, ROOT)}:{line_number}"
    if resolved != ROOT and not resolved.startswith(ROOT + os.sep):
        problems.append(f"{where}: link '{target}' leaves the repository")
    elif not os.path.exists(resolved):
        problems.append(f"{where}: link '{target}' names no file in the repository")


def check_snippet(page, line_number, source, block, problems):
    where = f"{os.path.relpath(page, ROOT)}:{line_number}"
    path = os.path.join(ROOT, source)
    if not os.path.isfile(path):
        problems.append(f"{where}: snippet source '{source}' does not exist")
        return
    wanted = [line.strip() for line in block if line.strip()]
    have = [line.strip() for line in open(path, encoding="utf-8") if line.strip()]
    if not wanted or not any(have[i:i + len(wanted)] == wanted for i in range(len(have) - len(wanted) + 1)):
        problems.append(f"{where}: the snippet is not a run of lines of {source} (keep the two the same)")


def check_page(page, problems):
    lines = open(page, encoding="utf-8").read().split("\n")
    fence = None
    snippet = None
    block = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence):
                if snippet:
                    check_snippet(page, snippet[0], snippet[1], block, problems)
                fence, snippet, block = None, None, []
            else:
                block.append(line)
            continue
        if stripped.startswith("```") or stripped.startswith("~~~"):
            fence = stripped[:3]
            continue
        match = SNIPPET.search(re.sub(r"`[^`]*`", "", line))
        if match:
            snippet = (number, match.group(1))
            continue
        if stripped and snippet and not stripped.startswith("<!--"):
            problems.append(f"{os.path.relpath(page, ROOT)}:{snippet[0]}: a snippet marker must stand just before a code block")
            snippet = None
        text = re.sub(r"`[^`]*`", "", line)  # links inside inline code are not links
        for match in LINK.finditer(text):
            check_link(page, number, match.group(1) or match.group(2), problems)
        match = REFERENCE.match(text)
        if match:
            check_link(page, number, match.group(1), problems)


def main():
    problems = []
    checked = pages()
    for page in checked:
        check_page(page, problems)
    for manifest in glob.glob(os.path.join(ROOT, "**/Package.swift"), recursive=True):
        if "/.build" in manifest:
            continue
        for number, line in enumerate(open(manifest, encoding="utf-8"), start=1):
            if "CONVENTIONS.md" in line or "../shared" in line or "shared/DESIGN" in line:
                problems.append(f"{os.path.relpath(manifest, ROOT)}:{number}: points at the team's notes, outside the repository")
    for problem in problems:
        print(problem)
    print(f"check-docs: {len(checked)} pages, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
