"""Fetch a UniProtKB query from the REST API once, cache it, and resume after an interruption.

For users who are online: the offline default never calls this. The query is paged
(``/uniprotkb/search`` with ``size=`` and the ``Link: rel="next"`` cursor); each page is
written to a part file and the next cursor to a state file, so a killed download restarts
at the page it had reached. The finished table is assembled atomically and reused by every
later call with the same query, fields and format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from core.cache import cache_dir
from core.errors import ConfigError, OfflineError
from core.io import atomic_path, write_json
from domains.protein.uniprot_tsv import INTERPLM_FIELDS

log = logging.getLogger(__name__)

REST_SEARCH = "https://rest.uniprot.org/uniprotkb/search"
# InterPLM's set: reviewed (Swiss-Prot) proteins that fit ESM-2's 1022-residue window.
DEFAULT_QUERY = "(reviewed:true) AND (length:[1 TO 1022])"
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


def query_url(query: str, fields: tuple[str, ...] | None, fmt: str, page_size: int) -> str:
    params = {"query": query, "format": fmt, "size": str(page_size)}
    if fields and fmt == "tsv":
        params["fields"] = ",".join(fields)
    return f"{REST_SEARCH}?{urllib.parse.urlencode(params)}"


def download_uniprot(query: str = DEFAULT_QUERY, *, fields: tuple[str, ...] | None = INTERPLM_FIELDS,
                     fmt: str = "tsv", page_size: int = 500, max_entries: int | None = None,
                     out_dir: str | Path | None = None, timeout: float = 60.0, retries: int = 4,
                     opener=None) -> Path:
    """Download ``query`` as ``fmt`` (``tsv`` or ``txt`` = Swiss-Prot flat file); return the file.

    ``max_entries`` stops after that many entries (whole pages), e.g. for a quick sample.
    ``opener`` replaces ``urllib.request.urlopen`` (tests pass a fake server).
    """
    if fmt not in ("tsv", "txt", "fasta"):
        raise ConfigError(f"unknown UniProt format {fmt!r}", fix="use fmt=tsv, txt or fasta")
    opener = opener or urllib.request.urlopen
    key = hashlib.sha256(json.dumps([query, list(fields or ()), fmt, max_entries]).encode()).hexdigest()[:16]
    root = Path(out_dir) if out_dir else cache_dir("uniprot")
    final = root / f"uniprot_{key}.{'dat' if fmt == 'txt' else fmt}"
    if final.exists():
        return final
    parts_dir = root / f"uniprot_{key}.parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    state_path = parts_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {
        "query": query, "next": query_url(query, fields, fmt, page_size), "pages": 0, "entries": 0}
    while state["next"] and (max_entries is None or state["entries"] < max_entries):
        body, link = _fetch(state["next"], opener, timeout, retries)
        page = parts_dir / f"page_{state['pages']:06d}.{fmt}"
        text = body.decode("utf-8")
        if fmt == "tsv" and state["pages"] > 0:
            text = text.split("\n", 1)[1] if "\n" in text else ""
        with atomic_path(page) as tmp:
            tmp.write_text(text)
        n = _count_entries(text, fmt, first_page=state["pages"] == 0)
        m = _NEXT.search(link or "")
        state = {**state, "next": m.group(1) if m else None, "pages": state["pages"] + 1,
                 "entries": state["entries"] + n}
        write_json(state_path, state)
        log.info("UniProt: %d entries in %d pages", state["entries"], state["pages"])
    with atomic_path(final) as tmp, open(tmp, "w") as out:
        for page in sorted(parts_dir.glob(f"page_*.{fmt}")):
            out.write(page.read_text())
    for p in parts_dir.iterdir():
        p.unlink()
    parts_dir.rmdir()
    return final


def _count_entries(text: str, fmt: str, first_page: bool) -> int:
    if fmt == "tsv":
        n = sum(1 for line in text.splitlines() if line.strip())
        return n - 1 if first_page else n
    if fmt == "txt":
        return sum(1 for line in text.splitlines() if line.startswith("//"))
    return text.count(">")


def _fetch(url: str, opener, timeout: float, retries: int) -> tuple[bytes, str | None]:
    delay = 2.0
    for attempt in range(retries + 1):
        try:
            with opener(url, timeout=timeout) as resp:
                return resp.read(), resp.headers.get("Link")
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            if attempt == retries:
                raise OfflineError(f"cannot reach the UniProt REST API ({err})", path=url,
                                   fix="check the network, or download the table elsewhere and point "
                                       "domain.path at it; re-running resumes from the last page") from None
            log.warning("UniProt request failed (%s); retrying in %.0f s", err, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
