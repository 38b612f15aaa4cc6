"""MkDocs hook: the README is the site's home page (docs/index.md is not a copy of it).

The README links the pages as ``docs/<page>.md``; on the site they are siblings of the
home page, so the ``docs/`` prefix is dropped. Links to files outside ``docs/`` are not
rewritten, and ``mkdocs build --strict`` reports them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

_DOCS_LINK = re.compile(r"\]\(docs/")


def readme_as_home(readme: str) -> str:
    """The README's text, its links to ``docs/`` pages made relative to ``docs/``."""
    return _DOCS_LINK.sub("](", readme)


def on_files(files: Files, config: Any, **_: Any) -> Files:
    """Add the README, links rewritten, as the home page ``index.md``."""
    readme = Path(config["config_file_path"]).parent / "README.md"
    content = readme_as_home(readme.read_text(encoding="utf-8"))
    files.append(File.generated(config, "index.md", content=content))
    return files
