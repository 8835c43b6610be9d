"""Debian packages that ship English text, found where they are installed or unpacked.

The broad corpus reads data files that Debian packages ship (a dictionary, WordNet's glosses,
Jane Austen's novels, fortunes, a Bible translation, two handbooks). Installing them with
``apt-get install`` would pull their programs' dependencies (R for the Austen package), so
``fetch`` downloads the ``.deb`` files alone and unpacks them with ``dpkg -x`` under the user
cache; ``locate`` looks in the system root first, then in that unpacked tree, so either way works.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from core.cache import cache_dir
from core.errors import MissingDependencyError

PACKAGES = ("dict-gcide", "wordnet-base", "r-cran-janeaustenr", "fortunes", "dict-devil", "dict-jargon",
            "sword-text-web", "debian-handbook", "debian-reference-en")
# folders whose other-language copies are removed after unpacking (the handbook ships 20 languages)
ENGLISH_ONLY = {"debian-handbook": ("usr/share/doc/debian-handbook/html", "en-US")}


def unpacked_root(create: bool = True) -> Path:
    """Where :func:`fetch` unpacks the packages (``<cache>/corpus/debian``)."""
    return cache_dir("corpus", "debian", create=create)


def locate(package: str, relpath: str, roots: list[Path] | None = None) -> Path:
    """The file ``relpath`` (e.g. ``usr/share/dictd/gcide.dict.dz``) of ``package``: installed, or unpacked."""
    for root in roots if roots is not None else [Path("/"), unpacked_root(create=False)]:
        path = Path(root) / relpath
        if path.exists():
            return path
    raise MissingDependencyError(f"{relpath} of the Debian package {package} is neither installed nor unpacked "
                                 f"under {unpacked_root(create=False)}",
                                 fix="python3 -m domains.text.broad fetch (or: apt-get install " + package + ")")


def fetch(packages: tuple[str, ...] = PACKAGES, dest: Path | None = None) -> list[str]:
    """Download each package's ``.deb`` (no dependencies) and unpack it under ``dest``; returns
    the packages unpacked now (those already there are skipped, so a rerun resumes)."""
    dest = Path(dest) if dest is not None else unpacked_root()
    done: list[str] = []
    for pkg in packages:
        marker = dest / ".unpacked" / pkg
        if marker.exists():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            got = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True)
            debs = list(Path(tmp).glob("*.deb"))
            if got.returncode or not debs:
                raise MissingDependencyError(f"apt-get download {pkg} failed: {got.stderr.strip()[-300:]}",
                                             fix="run apt-get update first, or apt-get install " + pkg)
            subprocess.run(["dpkg", "-x", str(debs[0]), str(dest)], check=True)
        if pkg in ENGLISH_ONLY:
            folder, keep = ENGLISH_ONLY[pkg]
            for sub in (dest / folder).iterdir():
                if sub.is_dir() and sub.name != keep:
                    shutil.rmtree(sub)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(debs[0].name + "\n")
        done.append(pkg)
    return done


def have_tools() -> bool:
    """Whether this machine can download and unpack ``.deb`` files."""
    return bool(shutil.which("apt-get") and shutil.which("dpkg"))
