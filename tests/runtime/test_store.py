import json
import sqlite3

import numpy as np

from finprint.runtime.store import JsonlLog, Store


def _end(tid, who, t0, length):
    return {"type": "track_end", "ts": t0 + 1, "camera": "c1", "track_id": tid, "individual_id": who,
            "unknown": who is None, "similarity": 0.9, "frames": 10, "first_ts": t0, "last_ts": t0 + 1,
            "length_cm": length, "speed_cm_s": 3.0}


def test_gallery_roundtrip_and_forget(tmp_path):
    store = Store(tmp_path / "g.db")
    emb = np.eye(4, dtype=np.float32)[:2]
    assert store.enroll("fish000", emb, source="crops") == 2
    store.enroll("fish001", np.eye(4, dtype=np.float32)[2:3])
    gallery = store.load_gallery(threshold=0.5)
    assert gallery.individuals == ["fish000", "fish001"] and len(gallery) == 3
    assert gallery.match(np.eye(4, dtype=np.float32)[2:3])[0][0] == "fish001"
    assert store.forget("fish000") and not store.forget("fish000")
    assert store.count("embeddings") == 1
    store.close()


def test_events_update_individual_records(tmp_path):
    store = Store(tmp_path / "g.db")
    store.enroll("fish000", np.ones((1, 4), np.float32))
    store.write_events([_end(1, "fish000", 100.0, 20.0), _end(2, None, 105.0, None)])
    store.write_events([_end(3, "fish000", 200.0, 21.0), {"type": "identified", "ts": 1.0, "camera": "c1"}])
    (rec,) = store.individuals()
    assert rec["sightings"] == 2 and rec["first_seen"] == 100.0 and rec["last_seen"] == 201.0
    assert rec["lengths_cm"] == [20.0, 21.0]
    assert store.count("sightings") == 3 and store.count("events") == 4
    store.close()
    conn = sqlite3.connect(tmp_path / "g.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_jsonl_log_appends_lines(tmp_path):
    log = JsonlLog(tmp_path / "e.jsonl")
    log.write_events([{"type": "a", "ts": 1}, {"type": "b", "ts": 2}])
    log.close()
    log = JsonlLog(tmp_path / "e.jsonl")
    log.write_events([{"type": "c", "ts": 3}])
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [e["type"] for e in lines] == ["a", "b", "c"]


def test_gallery_counters_when_events_go_to_another_database(tmp_path):
    gallery, events = Store(tmp_path / "g.db"), Store(tmp_path / "e.db")
    gallery.enroll("fish000", np.ones((1, 4), np.float32))
    batch = [_end(1, "fish000", 10.0, 20.0)]
    events.write_events(batch)
    gallery.update_individuals(batch)
    assert gallery.individuals()[0]["sightings"] == 1 and gallery.count("events") == 0
    assert events.count("sightings") == 1


def test_a_gallery_from_before_whitening_opens_and_keeps_its_tuned_rule(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE open_set (id INTEGER PRIMARY KEY CHECK (id = 1), threshold REAL NOT NULL, margin REAL NOT NULL,
            embedder TEXT NOT NULL, embedder_sha256 TEXT NOT NULL, tuned_on TEXT NOT NULL, created REAL NOT NULL);
        INSERT INTO open_set VALUES (1, 0.8, 0.05, 'emb.onnx', 'abc', 'cam1.mp4', 0);
        CREATE TABLE tracking (id INTEGER PRIMARY KEY CHECK (id = 1), high_score REAL NOT NULL, appearance_gate REAL,
            detector TEXT NOT NULL, detector_sha256 TEXT NOT NULL, embedder_sha256 TEXT NOT NULL, tuned_on TEXT NOT NULL,
            created REAL NOT NULL);
        INSERT INTO tracking VALUES (1, 0.35, 0.0, 'det.onnx', 'def', 'abc', 'cam1.mp4', 0);
    """)
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.open_set() == {"threshold": 0.8, "margin": 0.05, "embedder": "emb.onnx", "embedder_sha256": "abc",
                                "tuned_on": "cam1.mp4", "whitening": None}
    tracking = store.tracking()
    assert tracking is not None and (tracking["high_score"], tracking["appearance_space"], tracking["split_window"],
                                     tracking["min_hits"]) == (0.35, None, None, None)
    store.set_open_set(0.7, 0.02, "emb.onnx", "abc", "cam1.mp4", whitening=0.3)
    store.set_tracking(0.5, 0.0, "det.onnx", "def", "abc", "cam1.mp4", appearance_space="gallery", split_window=15, min_hits=10)
    store.enroll("fish000", np.eye(4, dtype=np.float32)[:2])
    store.close()
    store = Store(path)  # opening again adds nothing twice
    assert store.open_set()["whitening"] == 0.3 and store.tracking()["appearance_space"] == "gallery"
    assert store.tracking()["split_window"] == 15 and store.tracking()["min_hits"] == 10
    assert store.load_gallery(0.5, whitening=0.3).whitening == 0.3 and store.load_gallery(0.5).whitening is None
    store.close()
