"""The UniProt downloader pages through the REST cursor, resumes after a failure, and caches."""

from __future__ import annotations

import io
import urllib.error

import pytest

from core.errors import OfflineError
from domains.protein.download import download_uniprot


class _Resp(io.BytesIO):
    def __init__(self, body: bytes, link: str | None):
        super().__init__(body)
        self.headers = {"Link": link} if link else {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _server(fail_on_page: int | None = None):
    pages = [b"Entry\tSequence\nP1\tMKV\nP2\tMAA\n", b"Entry\tSequence\nP3\tMGG\n"]
    calls = []

    def opener(url, timeout=None):
        page = 1 if "cursor=2" in url else 0
        calls.append(page)
        if fail_on_page is not None and page == fail_on_page and calls.count(page) == 1:
            raise urllib.error.URLError("connection reset")
        link = '<https://rest.uniprot.org/uniprotkb/search?cursor=2>; rel="next"' if page == 0 else None
        return _Resp(pages[page], link)

    return opener, calls


def test_pages_are_joined_with_one_header_and_cached(tmp_path):
    opener, calls = _server()
    out = download_uniprot("reviewed:true", out_dir=tmp_path, opener=opener)
    assert out.read_text() == "Entry\tSequence\nP1\tMKV\nP2\tMAA\nP3\tMGG\n"
    again = download_uniprot("reviewed:true", out_dir=tmp_path, opener=opener)
    assert again == out and calls == [0, 1]


def test_a_failed_page_resumes_where_it_stopped(tmp_path):
    opener, calls = _server(fail_on_page=1)
    with pytest.raises(OfflineError, match="resumes from the last page"):
        download_uniprot("reviewed:true", out_dir=tmp_path, opener=opener, retries=0)
    out = download_uniprot("reviewed:true", out_dir=tmp_path, opener=opener, retries=0)
    assert calls == [0, 1, 1]  # page 0 was not fetched twice
    assert out.read_text().count("\n") == 4
