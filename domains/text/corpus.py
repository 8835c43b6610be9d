"""Real English prose available offline: module, class and function docstrings of the Python
standard library, read from its sources (the same text on every machine with this Python)."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

from core.samples import Sample

SKIP_DIRS = {"site-packages", "test", "tests", "idle_test"}


def stdlib_paragraphs(limit: int, *, min_chars: int = 200, max_chars: int = 1200) -> list[str]:
    """Up to ``limit`` docstrings of at least ``min_chars`` characters, whitespace collapsed and
    cut at ``max_chars``, in a fixed order (sorted source paths, then the order of the AST walk)."""
    out: list[str] = []
    lib = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(p for p in lib.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(lib).parts))
    for path in paths:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > min_chars:
                    out.append(" ".join(doc.split())[:max_chars])
                    if len(out) >= limit:
                        return out
    return out


def docstring_samples(n: int, *, start: int = 0, max_chars: int = 1200) -> list[Sample]:
    """Paragraphs ``start..start+n`` of :func:`stdlib_paragraphs` as samples ``doc<i>``."""
    texts = stdlib_paragraphs(start + n, max_chars=max_chars)[start:]
    return [Sample(f"doc{start + i}", t, {"source": "python-stdlib-docstring"}) for i, t in enumerate(texts)]
