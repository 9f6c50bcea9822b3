"""`farm.yaml`: the daemon's configuration, validated completely before anything starts.

Every section forbids unknown keys so a typo fails with its key path instead of silently
falling back to a default. Paths are resolved relative to the config file.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from finprint.errors import ConfigError
from finprint.runtime.redact import redact
from finprint.runtime.tracker import ByteTracker

if TYPE_CHECKING:
    from finprint.runtime.identity import Gallery, IdentityResolver

log = logging.getLogger(__name__)

# scheme://[userinfo@]host[:port][/path][?query]; the userinfo ends at the last "@" before the path.
_URL_RE = re.compile(r"^(rtsp|rtsps|http|https)://([^\s/]*@)?[^\s/:?#@]+(:\d{1,5})?([/?][^\s]*)?$")
_SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S*$")
# Camera ids name snapshot files, metric labels and events: no path separators, spaces or control characters.
_CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraConfig(_Strict):
    id: str  # letters, digits, '.', '_', '-'; 64 at most
    # A video file path, a USB index (0, 1 ...), an rtsp:// or http(s):// URL, or a GStreamer pipeline.
    source: str | int
    kind: Literal["auto", "file", "usb", "url", "gstreamer"] = "auto"
    loop: bool = False  # video files: start again at the end (demos, soak runs)
    px_per_cm: float = Field(gt=0)
    # Frames per second to read at most. None: a video file plays at its own frame rate (like a
    # camera, so the drop-oldest queue is not flooded); live cameras are not throttled.
    fps_limit: float | None = Field(default=None, gt=0)

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not _CAMERA_ID_RE.match(value):
            raise ValueError(f"camera ids are 1 to 64 letters, digits, '.', '_' or '-' starting with a letter or digit "
                             f"(they name snapshot files and metrics), got {value[:80]!r}")
        return value

    def resolved_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        if isinstance(self.source, int) or str(self.source).isdigit():
            return "usb"
        s = str(self.source)
        if _SCHEME_RE.match(s):  # a URL is one word starting with its scheme; a pipeline ("rtspsrc location=rtsp://... ! ...") is not
            return "url"
        if "!" in s:
            return "gstreamer"
        if "://" in s:
            return "url"  # malformed: _check_camera says so
        return "file"


class ModelsConfig(_Strict):
    detector: Path
    embedder: Path
    # Each model must have its manifest (sha256 and inputs checked at start). false runs a model without one,
    # unchecked (a missing manifest is then a warning); a manifest path that is a folder is always an error.
    require_manifest: bool = True
    backend: Literal["auto", "tensorrt", "ort-gpu", "cpu"] = "auto"  # as finprint.runtime.engines.open_engine
    max_batch: int = Field(default=4, ge=1, le=64)
    score_threshold: float | None = Field(default=None, ge=0, le=1)  # None: the manifest's
    # None: the gallery's tuned value (finprint tune-open-set), else the embedder manifest's.
    open_set_threshold: float | None = Field(default=None, ge=-1, le=1)
    # A track's closest fish must lead the runner-up by this much (cosine), else it is unknown.
    # None: the gallery's tuned value, else DEFAULT_OPEN_SET_MARGIN.
    open_set_margin: float | None = Field(default=None, ge=0, le=2)
    # Where TensorRT engines built from the ONNX files go (the model folder may be read-only, as under
    # the systemd unit). None: an `engines` folder beside the gallery.
    engine_cache: Path | None = None


class MqttConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic: str = "finprint/events"
    client_id: str = "finprint-daemon"
    qos: Literal[0, 1, 2] = 1
    buffer: int = Field(default=10000, ge=1)  # events kept while the broker is away


class SinksConfig(_Strict):
    sqlite: Path | None = None  # None: the gallery database also holds sightings and events
    jsonl: Path | None = None
    mqtt: MqttConfig | None = None
    snapshots: Path | None = None  # a JPEG per new track, named by event id


# The web page's token, when the config holds none (a secret is better kept out of farm.yaml).
TOKEN_ENV = "FINPRINT_HTTP_TOKEN"
MIN_TOKEN_LEN = 16


class HttpConfig(_Strict):
    enabled: bool = True
    bind: str = "127.0.0.1"  # local only by default: metrics and the page are not for the open network
    port: int = Field(default=9108, ge=0, le=65535)
    # Required on every route when bound beyond this machine (else optional): `Authorization: Bearer <token>`,
    # or `?token=` once in the browser (a cookie then). None: the environment's FINPRINT_HTTP_TOKEN.
    token: str | None = Field(default=None, repr=False)
    page: bool = True  # the web page (live view, individuals, review queue) beside /healthz and /metrics


class ReviewConfig(_Strict):
    """What the daemon keeps of each ended track for the review queue (runtime/review.py)."""

    enabled: bool = True
    folder: Path | None = None  # crops and frames; None: a `review` folder beside the gallery
    lead: float = Field(default=0.1, ge=0)  # named tracks that led the runner-up by less are reviewed too
    embeddings: int = Field(default=16, ge=1, le=256)  # per track, thinned along it
    crops: int = Field(default=4, ge=1, le=32)


class WatchdogConfig(_Strict):
    frame_timeout_s: float = Field(default=10.0, gt=0)  # no frame for this long -> reconnect
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    max_restarts: int = Field(default=20, ge=0)  # consecutive failed reconnects before giving up on a camera
    worker_stall_s: float = Field(default=30.0, gt=0)  # inference heartbeat older than this -> unhealthy


class TrackingConfig(_Strict):
    high_score: float = Field(default=0.5, ge=0, le=1)
    # ByteTrack's second pass keeps tracks alive on detections from low_score up to high_score. The pipeline
    # drops detections under the detector's score threshold (models.score_threshold, else its manifest's)
    # first, so null = every detection the pipeline passes; a value under that threshold changes nothing
    # (the daemon says so at start).
    low_score: float | None = Field(default=None, ge=0, le=1)
    match_iou: float = Field(default=0.3, ge=0, le=1)
    max_lost_frames: int = Field(default=30, ge=1)
    # A track is confirmed at its `min_hits`-th frame and reported (events, a sighting, a name voted over its
    # confirmed frames) once it has `min_hits` confirmed frames, the confirming one included: 2 * min_hits - 1
    # frames in all, and a shorter track is dropped. Short tracks are mostly fish seen in part, which no
    # embedder names reliably, so waiting longer trades brief sightings for fewer wrong names;
    # `finprint tune-open-set` tries it.
    min_hits: int = Field(default=3, ge=1)
    # Appearance in association (runtime/tracker.py): a detection whose embedding's cosine similarity to
    # a track's running mean is below the gate never continues that track; null = boxes only.
    appearance_gate: float | None = Field(default=0.3, ge=-1, le=1)
    appearance_weight: float = Field(default=0.5, ge=0)  # how much looks count against box overlap
    appearance_momentum: float = Field(default=0.8, ge=0, lt=1)  # running mean: weight of the past
    # Where the tracker compares looks: the embedder's own space, or the gallery's matching space (the same
    # unless the gallery is whitened; `finprint tune-open-set` tries both with a whitened gallery).
    appearance_space: Literal["embedder", "gallery"] = "embedder"
    # Track splitting (runtime/identity.py, IdentityResolver.associate): a track whose last `split_window`
    # frames voted for one other known fish in at least `split_share` of them goes on under a new id;
    # 0 = never. `finprint tune-open-set` tries it.
    split_window: int = Field(default=0, ge=0)
    split_share: float = Field(default=0.8, gt=0.5, le=1)

    def make_resolver(self, gallery: Gallery, px_per_cm: dict[str, float], margin: float) -> IdentityResolver:
        """The identity resolver these settings go with (one per daemon or replayed video)."""
        from finprint.runtime.identity import IdentityResolver

        return IdentityResolver(gallery, px_per_cm, min_frames=self.min_hits, margin=margin,
                                appearance_space=self.appearance_space, split_window=self.split_window,
                                split_share=self.split_share)

    def make_tracker(self) -> ByteTracker:
        return ByteTracker(
            high_score=self.high_score, low_score=0.0 if self.low_score is None else self.low_score,
            match_iou=self.match_iou, max_lost_frames=self.max_lost_frames, min_hits=self.min_hits,
            appearance_gate=self.appearance_gate, appearance_weight=self.appearance_weight,
            appearance_momentum=self.appearance_momentum,
        )


class FarmConfig(_Strict):
    cameras: list[CameraConfig] = Field(min_length=1)
    models: ModelsConfig
    gallery: Path
    sinks: SinksConfig = SinksConfig()
    http: HttpConfig = HttpConfig()
    review: ReviewConfig = ReviewConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    tracking: TrackingConfig = TrackingConfig()
    queue_size: int = Field(default=8, ge=1)  # frames per camera before the oldest is dropped

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        ids = [c.id for c in cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"camera ids must be unique, repeated: {', '.join(dupes)}")
        return cameras


def _resolve(base: Path, p: Path | None) -> Path | None:
    if p is None:
        return None
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else (base / p)


def _can(path: Path, mode: int) -> bool:
    """os.access for the effective user: the one the daemon writes as (systemd's User=, or sudo -u)."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _check_writable_file(path: Path, what: str, key: str) -> None:
    if path.exists():
        if path.is_dir() or not _can(path, os.W_OK):
            raise ConfigError(f"{key}: {what} {path} is not a writable file")
        return
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"{key}: {what} {path}: folder {parent} does not exist")
    if not _can(parent, os.W_OK):
        raise ConfigError(f"{key}: {what} {path}: folder {parent} is not writable")


def _check_writable_folder(path: Path, key: str) -> None:
    """SQLite in WAL mode writes `-wal` and `-shm` files beside the database: its folder must be writable too."""
    if path.exists() and not _can(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: folder {path.parent} is not writable (SQLite keeps its -wal and -shm files there)")


def _check_camera(i: int, cam: CameraConfig, base: Path) -> CameraConfig:
    key = f"cameras.{i}.source"
    kind = cam.resolved_kind()
    if kind == "url":
        if not _URL_RE.match(str(cam.source)):
            raise ConfigError(f"{key}: malformed camera URL {redact(cam.source, cam.source)!r} "
                              "(expected rtsp://[user:password@]host[:port]/path or http(s)://...)")
    elif kind == "usb":
        if not str(cam.source).isdigit():
            raise ConfigError(f"{key}: a USB camera is an index (0, 1, ...), got {cam.source!r}")
        return cam.model_copy(update={"source": int(cam.source)})
    elif kind == "file":
        path = _resolve(base, Path(str(cam.source)))
        assert path is not None
        if not path.is_file():
            raise ConfigError(f"{key}: video file {path} not found")
        return cam.model_copy(update={"source": str(path)})
    return cam


def _check_distinct(written: dict[str, Path | None], read: dict[str, Path | None]) -> None:
    """Two sinks in one file overwrite each other (a JSONL log appended to the gallery database destroys it),
    and a sink must not write over a model or a video. sinks.sqlite may name the gallery: one database."""

    def names(key: str, path: Path) -> set[str]:
        real = os.path.realpath(path)
        return {real} | ({real + s for s in ("-wal", "-shm", "-journal")} if key in ("gallery", "sinks.sqlite") else set())

    def same(a: Path, b: Path) -> bool:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links

    sinks = [(k, p) for k, p in written.items() if p is not None]
    others = [(k, p) for k, p in read.items() if p is not None]
    for i, (key, path) in enumerate(sinks):
        for other_key, other in sinks[i + 1:] + others:
            if {key, other_key} == {"gallery", "sinks.sqlite"} and os.path.realpath(path) == os.path.realpath(other):
                continue
            if names(key, path) & names(other_key, other) or same(path, other):
                # Name the key to change: the later sink, or the sink that would write over a model or video.
                bad, bad_path, first = (other_key, other, key) if other_key in written else (key, path, other_key)
                raise ConfigError(f"{bad}: {bad_path} is the same file as {first}; every sink needs its own file")


def is_loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind == "localhost"


def _check_http(http: HttpConfig) -> HttpConfig:
    """The bind address, and the token: from the environment when the config has none; required beyond loopback."""
    if not http.bind.strip():
        raise ConfigError("http.bind: empty; write 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
    token = http.token if http.token is not None else (os.environ.get(TOKEN_ENV) or None)
    if token is not None and (len(token) < MIN_TOKEN_LEN or not token.isascii() or not token.isprintable() or " " in token):
        raise ConfigError(f"http.token: use at least {MIN_TOKEN_LEN} printable ASCII characters without spaces "
                          "(e.g. the output of: openssl rand -hex 16)")
    if not is_loopback(http.bind) and token is None:
        raise ConfigError(f"http.bind {http.bind}: served beyond this machine, every route needs a token; set http.token "
                          f"or {TOKEN_ENV} (e.g. openssl rand -hex 16), or bind 127.0.0.1")
    return http.model_copy(update={"token": token})


def validate_config(cfg: FarmConfig, base: Path) -> FarmConfig:
    """Resolve paths and check everything the daemon will touch, so failures happen before start."""
    cameras = [_check_camera(i, c, base) for i, c in enumerate(cfg.cameras)]
    models = cfg.models.model_copy(
        update={"detector": _resolve(base, cfg.models.detector), "embedder": _resolve(base, cfg.models.embedder)}
    )
    for key in ("detector", "embedder"):
        path: Path = getattr(models, key)
        if not path.is_file():
            raise ConfigError(f"models.{key}: model file {path} not found")
    gallery = _resolve(base, cfg.gallery)
    assert gallery is not None
    _check_writable_file(gallery, "gallery", "gallery")
    _check_writable_folder(gallery, "gallery")
    models = models.model_copy(update={"engine_cache": _resolve(base, models.engine_cache) or gallery.parent / "engines"})
    sinks = cfg.sinks.model_copy(
        update={
            "sqlite": _resolve(base, cfg.sinks.sqlite),
            "jsonl": _resolve(base, cfg.sinks.jsonl),
            "snapshots": _resolve(base, cfg.sinks.snapshots),
        }
    )
    if sinks.sqlite is not None:
        _check_writable_file(sinks.sqlite, "database", "sinks.sqlite")
        _check_writable_folder(sinks.sqlite, "sinks.sqlite")
    if sinks.jsonl is not None:
        _check_writable_file(sinks.jsonl, "event log", "sinks.jsonl")
    if sinks.snapshots is not None and not (sinks.snapshots.is_dir() and _can(sinks.snapshots, os.W_OK)):
        raise ConfigError(f"sinks.snapshots: {sinks.snapshots} is not a writable folder")
    read = {"models.detector": models.detector, "models.embedder": models.embedder}
    read.update({f"cameras.{i}.source": Path(c.source) for i, c in enumerate(cameras) if c.resolved_kind() == "file"})
    _check_distinct({"gallery": gallery, "sinks.sqlite": sinks.sqlite, "sinks.jsonl": sinks.jsonl}, read)
    http = _check_http(cfg.http) if cfg.http.enabled else cfg.http
    review = cfg.review.model_copy(update={"folder": _resolve(base, cfg.review.folder) or gallery.parent / "review"})
    if cfg.review.enabled:
        folder = review.folder
        assert folder is not None
        if folder.exists() and not (folder.is_dir() and _can(folder, os.W_OK)):
            raise ConfigError(f"review.folder: {folder} is not a writable folder")
        if not folder.exists() and not _can(folder.parent, os.W_OK):
            raise ConfigError(f"review.folder: cannot create {folder} ({folder.parent} is not writable)")
    if cfg.tracking.low_score is not None and cfg.tracking.low_score > cfg.tracking.high_score:
        raise ConfigError("tracking.low_score must not exceed tracking.high_score")
    return cfg.model_copy(update={"cameras": cameras, "models": models, "gallery": gallery, "sinks": sinks, "http": http,
                                  "review": review})


def parse_config(data: object, base: Path, source: str = "config") -> FarmConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        cfg = FarmConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {where}: {msg}") from exc
    return validate_config(cfg, base)


def load_config(path: str | Path) -> FarmConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    return parse_config(data, path.resolve().parent, source=str(path))
