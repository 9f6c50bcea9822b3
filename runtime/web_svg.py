"""Small inline SVG plots for the web page (bars per day, a trend line): no plotting library, nothing fetched."""

from __future__ import annotations

from html import escape

W, H, PAD = 260, 70, 4


def bars(values: list[float], labels: list[str], title: str) -> str:
    """One bar per value (e.g. sightings per day), hover text per bar."""
    if not values:
        return _empty(title)
    top = max(max(values), 1e-9)
    width = (W - 2 * PAD) / len(values)
    rects = []
    for i, (v, label) in enumerate(zip(values, labels, strict=True)):
        h = (H - 2 * PAD) * v / top
        rects.append(f'<rect x="{PAD + i * width:.1f}" y="{H - PAD - h:.1f}" width="{max(width - 1, 1):.1f}" '
                     f'height="{h:.1f}" class="bar"><title>{escape(label)}: {v:g}</title></rect>')
    return _svg(title, "".join(rects), f"max {top:g}")


def line(xs: list[float], ys: list[float], title: str, unit: str = "") -> str:
    """A polyline of ys over xs (e.g. length over time), dots at the points."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    if not pts:
        return _empty(title)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    note = f"{y0:.3g}–{y1:.3g} {unit}" if y1 - y0 >= 1e-9 else f"{y0:.3g} {unit}"  # a flat line: its one value
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    sx = (W - 2 * PAD) / (x1 - x0) if x1 > x0 else 0.0

    def xy(p: tuple[float, float]) -> tuple[float, float]:
        x = PAD + (p[0] - x0) * sx if sx else W / 2
        return x, H - PAD - (H - 2 * PAD) * (p[1] - y0) / (y1 - y0)

    coords = [xy(p) for p in pts]
    poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" class="dot"/>' for x, y in coords[-60:])
    return _svg(title, f'<polyline points="{poly}" class="line"/>{dots}', note.strip())


def _svg(title: str, body: str, note: str) -> str:
    return (f'<figure class="plot"><figcaption>{escape(title)} <small>{escape(note)}</small></figcaption>'
            f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{escape(title)}">{body}</svg></figure>')


def _empty(title: str) -> str:
    return f'<figure class="plot"><figcaption>{escape(title)}</figcaption><p class="muted">no data yet</p></figure>'
