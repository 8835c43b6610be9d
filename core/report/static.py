"""Shared pieces of the multi-page static sites (feature atlas, sequence annotation pages).

A site is plain HTML files that open from disk or any web server: one stylesheet and one
small script in ``assets/`` shared by every page (so thousands of pages stay small), tables
that sort on a header click and filter as one types, and tokens shaded by activation with a
ten-step class instead of an inline colour per token.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from core.io import write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:1.5em auto;
     padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em;border-bottom:2px solid #444}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
a{color:#1f5fa8}table{border-collapse:collapse;font-size:0.88em;margin:0.6em 0}
th,td{border:1px solid #ccc;padding:2px 7px;text-align:right;vertical-align:top}
th{background:#f2f2f2;cursor:pointer;user-select:none}td.t,th.t{text-align:left}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
.muted{color:#666;font-size:0.9em}.search{padding:4px 8px;width:24em;margin:0.4em 0}
.seq{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.85em;word-break:break-all;line-height:1.8}
.seq b{font-weight:normal;color:#888}
.s1{background:rgba(255,140,0,.1)}.s2{background:rgba(255,140,0,.2)}.s3{background:rgba(255,140,0,.3)}
.s4{background:rgba(255,140,0,.4)}.s5{background:rgba(255,140,0,.5)}.s6{background:rgba(255,140,0,.6)}
.s7{background:rgba(255,140,0,.7)}.s8{background:rgba(255,140,0,.8)}.s9{background:rgba(255,140,0,.9)}
.seq i,.cells i{font-style:normal}
.tracks{overflow-x:auto;border:1px solid #ddd;padding:0.4em;margin:0.6em 0}
.trow{display:flex;align-items:center;white-space:nowrap;height:1.25em}
.trow .lab{flex:0 0 17em;font-size:0.78em;overflow:hidden;text-overflow:ellipsis;padding-right:0.5em}
.cells{display:flex;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.8em}
.cells i{display:inline-block;width:0.64em;text-align:center;height:1.2em}
.trow.sq .cells i{background:none}.trow:hover{outline:1px solid #999}
#status{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.85em;min-height:1.4em;color:#333}
.legend span{display:inline-block;padding:0 0.5em;margin-right:0.3em;font-size:0.8em}
.cards{display:flex;flex-wrap:wrap;gap:0.6em}.card{border:1px solid #ddd;border-radius:6px;padding:0.4em 0.8em}
svg a circle:hover{stroke:#000;stroke-width:1.5}circle:target{stroke:#000;stroke-width:3;r:7}
"""

JS = """
function cellValue(td){const v=td.getAttribute('data-v')??td.textContent.trim();const n=parseFloat(v);
  return (v!==''&&!isNaN(n)&&isFinite(v))?n:v.toLowerCase();}
function sortTable(th){const table=th.closest('table');const body=table.tBodies[0];
  const i=Array.prototype.indexOf.call(th.parentNode.children,th);const dir=th.dataset.dir==='desc'?'asc':'desc';
  table.querySelectorAll('th').forEach(h=>delete h.dataset.dir);th.dataset.dir=dir;
  const rows=Array.from(body.rows);const k=dir==='asc'?1:-1;
  rows.sort((a,b)=>{const x=cellValue(a.cells[i]),y=cellValue(b.cells[i]);
    if(typeof x===typeof y)return x<y?-k:x>y?k:0;return typeof x==='number'?-1:1;});
  rows.forEach(r=>body.appendChild(r));}
function filterTable(input){const table=document.getElementById(input.dataset.table);const q=input.value.toLowerCase();
  let shown=0;Array.from(table.tBodies[0].rows).forEach(r=>{const ok=r.textContent.toLowerCase().includes(q);
    r.style.display=ok?'':'none';shown+=ok;});const c=document.getElementById(input.dataset.table+'-count');
  if(c)c.textContent=shown+' shown';}
function trackHover(e){const cell=e.target.closest('.cells i');const st=document.getElementById('status');
  if(!cell||!st)return;const row=cell.closest('.trow');const i=Array.prototype.indexOf.call(cell.parentNode.children,cell);
  const seq=document.querySelector('.trow.sq .cells');const res=seq?seq.children[i]:null;
  const vals=row.dataset.v?row.dataset.v.split(','):null;
  st.textContent=(res?(res.title||res.textContent):('position '+(i+1)))+(vals?'  |  '+row.dataset.label+
    '  activation '+(vals[i]||'0'):'');}
document.addEventListener('click',e=>{const th=e.target.closest('table.sortable th');if(th)sortTable(th);});
document.addEventListener('input',e=>{if(e.target.matches('input.search'))filterTable(e.target);});
document.addEventListener('mouseover',trackHover);
"""


def write_assets(site_dir: str | Path) -> Path:
    """Write ``assets/site.css`` and ``assets/site.js`` under ``site_dir``; returns the folder."""
    assets = Path(site_dir) / "assets"
    write_text(assets / "site.css", CSS)
    write_text(assets / "site.js", JS)
    return assets


def page(title: str, body: str, *, assets: str = "assets") -> str:
    """A whole page linking the shared stylesheet and script (``assets`` relative to the page)."""
    t = html.escape(title)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{t}</title>"
            f"<link rel='stylesheet' href='{assets}/site.css'><script src='{assets}/site.js' defer></script>"
            f"</head><body>{body}</body></html>")


def level(value: float, vmax: float) -> int:
    """Shading step 0-9 of ``value`` on a scale whose top is ``vmax`` (anything > 0 gets at least 1)."""
    if not value > 0 or not vmax > 0:
        return 0
    return max(1, min(9, int(round(9 * value / vmax))))


def shaded_tokens(tokens: Sequence[str], values: Sequence[float], vmax: float) -> str:
    """Tokens as HTML with active ones shaded (and their value on hover); inactive ones plain."""
    out = []
    escaped: dict[str, str] = {}
    for tok, v in zip(tokens, values, strict=True):
        tok = str(tok)
        t = escaped.get(tok)
        if t is None:
            t = escaped[tok] = html.escape(tok)
        s = level(float(v), vmax) if v > 0 else 0
        out.append(f"<i class=s{s} title={float(v):.3g}>{t}</i>" if s else t)
    return "".join(out)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, table_id: str | None = None,
          text_columns: Sequence[int] = (0,), search: bool = False, sort_values: Sequence[Sequence] | None = None,
          caption: str = "") -> str:
    """A sortable table of already-escaped cell HTML; ``sort_values`` (same shape) gives the
    value each cell sorts by when its text would not (links, formatted numbers)."""
    tid = table_id or "t"
    head = "".join(f"<th class=t>{html.escape(c)}</th>" if i in text_columns else f"<th>{html.escape(c)}</th>"
                   for i, c in enumerate(columns))
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            cls = " class=t" if i in text_columns else ""
            sv = sort_values[r][i] if sort_values is not None else None
            dv = f" data-v='{html.escape(str(sv))}'" if sv is not None else ""
            cells.append(f"<td{cls}{dv}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    box = (f"<input class=search data-table='{tid}' placeholder='search...'> "
           f"<span class=muted id='{tid}-count'>{len(rows)} shown</span>") if search else ""
    cap = f"<p class=muted>{html.escape(caption)}</p>" if caption else ""
    return (f"{cap}{box}<table class=sortable id='{tid}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def fmt(value, digits: int = 3) -> str:
    """A number for a cell: ``3.14``, ``0.0021``; blank for missing."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value)) if value is not None else ""
    if v != v:
        return ""
    return f"{v:.{digits}g}"
