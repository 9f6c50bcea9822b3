"""The web page's HTML: three views (live, individuals, review queue) and a fish's own page.

Rendered on the server from plain strings, with the CSS and the few lines of JavaScript inline: no build step,
nothing fetched from the internet (farms are offline). Every value from the databases is HTML-escaped.
"""

from __future__ import annotations

import time
from html import escape
from urllib.parse import quote

from finprint.runtime.review import TrackRecord
from finprint.runtime.web_data import FishSummary
from finprint.runtime.web_svg import bars, line

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f6f7;color:#1d2b33}
header{background:#0f4c5c;color:#fff;padding:8px 16px;display:flex;gap:18px;align-items:center}
header a{color:#cfe8ef;text-decoration:none;font-weight:600}header a.on{color:#fff;border-bottom:2px solid #ffb703}
header .who{margin-left:auto;font-size:12px}header input{width:110px}
main{padding:12px 16px}.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002;padding:10px}
.cam img{max-width:480px;width:100%;display:block;background:#000}
.ok{color:#2a7a2a}.bad{color:#b02a2a}.muted{color:#778}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #e3e8ea;text-align:left;vertical-align:top}
.plot{margin:0}.plot figcaption{font-size:12px;color:#456}.plot svg{background:#f7fafb}
.bar{fill:#2a9d8f}.line{fill:none;stroke:#e76f51;stroke-width:1.5}.dot{fill:#e76f51}
.crops img{height:72px;margin-right:4px;border:1px solid #ccd}.snaps img{height:96px;margin:0 6px 6px 0}
.review-card{width:440px}.review-card .row{margin-top:6px;display:flex;gap:6px;align-items:center}
button{cursor:pointer}#msg{position:fixed;bottom:12px;right:12px;max-width:420px}
#msg div{padding:8px 12px;border-radius:4px;margin-top:6px;background:#fff;box-shadow:0 1px 4px #0003}
#msg .err{border-left:4px solid #b02a2a}#msg .done{border-left:4px solid #2a7a2a}
"""

JS = """
const csrf=document.querySelector('meta[name=csrf]').content;
const whoEl=document.getElementById('who');
whoEl.value=localStorage.getItem('finprint-who')||'';
whoEl.addEventListener('change',()=>localStorage.setItem('finprint-who',whoEl.value));
function say(text,cls){const d=document.createElement('div');d.className=cls;d.textContent=text;
  document.getElementById('msg').appendChild(d);setTimeout(()=>d.remove(),8000);}
async function post(url,data){
  const r=await fetch(url,{method:'POST',credentials:'same-origin',
    headers:{'Content-Type':'application/json','X-Finprint-CSRF':csrf},body:JSON.stringify({...data,who:whoEl.value})});
  let j={};try{j=await r.json();}catch(e){j={error:'HTTP '+r.status};}
  if(r.ok){sessionStorage.setItem('finprint-said',j.message||'done');location.reload();}else{say(j.error||('HTTP '+r.status),'err');}
}
const said=sessionStorage.getItem('finprint-said');if(said){sessionStorage.removeItem('finprint-said');say(said,'done');}
document.querySelectorAll('.review-card').forEach(card=>{
  const uid=card.dataset.uid;
  card.querySelector('.act-confirm').onclick=()=>post('/api/review',{uid,action:'confirm',fish:card.querySelector('.fish').value});
  card.querySelector('.act-new').onclick=()=>post('/api/review',{uid,action:'new',fish:card.querySelector('.new-id').value});
  card.querySelector('.act-ignore').onclick=()=>post('/api/review',{uid,action:'ignore'});
});
document.querySelectorAll('.act-undo').forEach(b=>b.onclick=()=>post('/api/undo',{id:Number(b.dataset.id)}));
if(document.querySelector('img.live')){setInterval(async()=>{
  document.querySelectorAll('img.live').forEach(i=>{i.src='/live/'+encodeURIComponent(i.dataset.cam)+'.jpg?t='+Date.now();});
  try{const s=await (await fetch('/api/live',{credentials:'same-origin'})).json();
    for(const [cam,v] of Object.entries(s.cameras)){const el=document.getElementById('stat-'+cam);
      if(el){el.textContent=v.fps.toFixed(1)+' fps · '+v.state+' · '+v.fish;}}}catch(e){}
},1000);}
"""

VIEWS = (("/", "Live"), ("/individuals", "Individuals"), ("/review", "Review"))


def when(ts: float | None) -> str:
    return "—" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def layout(title: str, body: str, csrf: str, active: str) -> str:
    nav = "".join(f'<a href="{href}" class="{"on" if href == active else ""}">{name}</a>' for href, name in VIEWS)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="csrf" content="{escape(csrf)}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>finprint · {escape(title)}</title>'
            f'<style>{CSS}</style></head><body><header><b>finprint</b>{nav}'
            '<span class="who">your name <input id="who" placeholder="who reviews"></span></header>'
            f'<main><h2>{escape(title)}</h2>{body}</main><div id="msg"></div><script>{JS}</script></body></html>')


def live_page(cameras: dict[str, dict], csrf: str) -> str:
    cards = []
    for cam, v in cameras.items():
        state_cls = "ok" if v["state"] == "streaming" else "bad"
        cards.append(f'<div class="card cam"><b>{escape(cam)}</b> <span id="stat-{escape(cam)}" class="{state_cls}">'
                     f'{v["fps"]:.1f} fps · {escape(v["state"])} · {escape(v["fish"])}</span>'
                     f'<img class="live" data-cam="{escape(cam)}" src="/live/{quote(cam)}.jpg" alt="latest frame of {escape(cam)}">'
                     '</div>')
    return layout("Live", f'<div class="grid">{"".join(cards)}</div>', csrf, "/")


def individuals_page(fish: list[FishSummary], csrf: str) -> str:
    if not fish:
        return layout("Individuals", '<p class="muted">No fish enrolled yet: enrol one from the review queue.</p>', csrf,
                      "/individuals")
    rows = []
    for f in fish:
        rows.append(
            f'<tr class="fish-row" data-fish="{escape(f.id)}"><td><a href="/fish/{quote(f.id)}"><b>{escape(f.id)}</b></a><br>'
            f'<span class="muted">last seen {when(f.last_seen)}<br>{f.sightings} sightings · {f.embeddings} embeddings</span></td>'
            f'<td>{bars([n for _, n in f.per_day], [d for d, _ in f.per_day], "sightings per day")}</td>'
            f'<td>{line([t for t, _ in f.lengths], [v for _, v in f.lengths], "length", "cm")}</td>'
            f'<td>{line([t for t, _ in f.speeds], [v for _, v in f.speeds], "activity (speed)", "cm/s")}</td></tr>')
    return layout("Individuals", f'<table class="card">{"".join(rows)}</table>', csrf, "/individuals")


def fish_page(f: FishSummary, sightings: list[dict], snapshots: list[str], csrf: str) -> str:
    snaps = "".join(f'<img src="/snapshots/{quote(s)}" alt="snapshot">' for s in snapshots) or '<p class="muted">no snapshots</p>'
    rows = "".join(
        f'<tr><td>{when(s["last_ts"])}</td><td>{escape(s["camera"])}</td><td>#{s["track_id"]}</td><td>{s["frames"]}</td>'
        f'<td>{_num(s["similarity"])}</td><td>{_num(s["length_cm"])}</td><td>{_num(s["speed_cm_s"])}</td></tr>'
        for s in sightings)
    body = (f'<p class="muted">first seen {when(f.first_seen)} · last seen {when(f.last_seen)} · {f.sightings} sightings</p>'
            f'<div class="grid">{bars([n for _, n in f.per_day], [d for d, _ in f.per_day], "sightings per day")}'
            f'{line([t for t, _ in f.lengths], [v for _, v in f.lengths], "length", "cm")}'
            f'{line([t for t, _ in f.speeds], [v for _, v in f.speeds], "activity (speed)", "cm/s")}</div>'
            f'<h3>Snapshots</h3><div class="snaps card">{snaps}</div><h3>Sightings</h3>'
            '<table class="card"><tr><th>ended</th><th>camera</th><th>track</th><th>frames</th><th>similarity</th>'
            f'<th>length cm</th><th>speed cm/s</th></tr>{rows}</table>')
    return layout(f"Fish {f.id}", body, csrf, "/individuals")


def review_page(queue: list[TrackRecord], fish: list[str], history: list[dict], csrf: str) -> str:
    options = "".join(f'<option value="{escape(f)}">{escape(f)}</option>' for f in fish)
    cards = []
    for t in queue:
        crops = "".join(f'<img src="/crops/{quote(c)}" alt="crop">' for c in t.crops)
        guess = (f'named <b>{escape(t.individual_id)}</b> with a thin lead ({_num(t.lead)})' if t.individual_id else
                 f'unknown (closest {escape(t.closest_id or "none")}, similarity {_num(t.similarity)})')
        cards.append(
            f'<div class="card review-card" data-uid="{escape(t.uid)}"><b>{escape(t.camera)} · track #{t.track_id}</b> '
            f'<span class="muted">{when(t.first_ts)} · {t.frames} frames</span><div>{guess}</div>'
            f'<div class="crops">{crops}</div>'
            f'<div class="row"><select class="fish">{options}</select><button class="act-confirm">this is</button></div>'
            '<div class="row"><input class="new-id" placeholder="new fish id"><button class="act-new">new fish</button>'
            '<button class="act-ignore">not a fish / ignore</button></div></div>')
    queue_html = f'<div class="grid">{"".join(cards)}</div>' if cards else '<p class="muted">Nothing to review.</p>'
    rows = "".join(
        f'<tr><td>{when(h["ts"])}</td><td>{escape(h["who"])}</td><td>{escape(h["action"])} {escape(h["individual_id"] or "")}</td>'
        f'<td>{escape(h["track_uid"])}</td><td>' + (f'undone by {escape(h["undone_by"] or "")} {when(h["undone_ts"])}'
                                                    if h["undone_ts"] else f'<button class="act-undo" data-id="{h["id"]}">undo</button>')
        + '</td></tr>' for h in history)
    decisions = (f'<h3>Decisions</h3><table class="card"><tr><th>when</th><th>who</th><th>what</th><th>track</th><th></th></tr>{rows}'
                 '</table>') if history else ""
    return layout("Review", queue_html + decisions, csrf, "/review")


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"
