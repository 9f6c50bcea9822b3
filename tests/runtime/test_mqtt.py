import getpass
import json
import socket
import subprocess
import threading
import time

import pytest

from finprint.runtime.mqtt_sink import MqttSink

pytestmark = pytest.mark.mqtt


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _broker(port, workdir):
    # Persistence keeps the subscriber's session (and its queued QoS 1 messages) across a restart. Started
    # as root, mosquitto would switch to its own user, which cannot write the test's folder: the session was
    # then never saved and events published before the subscriber came back went to nobody.
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {workdir}/\n"
        f"user {getpass.getuser()}\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def _wait(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_no_event_lost_across_broker_restart(tmp_path):
    import paho.mqtt.client as mqtt

    port = _free_port()
    broker = _broker(port, tmp_path)
    received: set[int] = set()
    lock = threading.Lock()

    def on_message(client, userdata, msg):
        with lock:
            received.add(json.loads(msg.payload)["seq"])

    def on_connect(client, userdata, flags, rc, props):
        client.subscribe("farm/events", qos=1)

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub", clean_session=False)
    sub.on_message = on_message
    sub.on_connect = on_connect
    sub.reconnect_delay_set(0.1, 0.5)
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sink = MqttSink("127.0.0.1", port, "farm/events", buffer=1000)
    sink._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
    sink.start()
    try:
        assert _wait(lambda: sink.connected and sub.is_connected())
        seq = 0
        for _ in range(50):
            sink.write_events([{"type": "t", "seq": seq}])
            seq += 1
        assert _wait(lambda: len(received) == 50)

        broker.terminate()
        broker.wait(10)
        assert _wait(lambda: not sink.connected)
        for _ in range(100):  # produced while the broker is down: buffered
            sink.write_events([{"type": "t", "seq": seq}])
            seq += 1
            time.sleep(0.002)
        assert sink.pending >= 100

        broker = _broker(port, tmp_path)
        for _ in range(50):
            sink.write_events([{"type": "t", "seq": seq}])
            seq += 1
        assert _wait(lambda: len(received) == seq), f"missing {sorted(set(range(seq)) - received)[:10]}"
        # Every event arrived; the broker's acknowledgements may still be on their way to the sink.
        assert _wait(lambda: sink.pending == 0), f"{sink.pending} events still unacknowledged"
        assert sink.dropped == 0
    finally:
        sink.close(timeout_s=1)
        sub.loop_stop()
        sub.disconnect()
        broker.terminate()
        broker.wait(10)


def test_buffer_bound_drops_oldest_while_broker_is_away():
    sink = MqttSink("127.0.0.1", _free_port(), "x", buffer=10)  # nobody listening there
    sink.start()
    try:
        sink.write_events([{"seq": i} for i in range(25)])
        assert sink.dropped == 15 and sink.pending == 10
        with sink._lock:
            assert json.loads(sink._buffer[0])["seq"] == 15
    finally:
        sink.close(timeout_s=0.1)
