"""MQTT event sink: paho-mqtt >= 2, automatic reconnect, and a bounded offline buffer.

Events wait in the buffer until the broker acknowledges them (QoS >= 1); messages in flight when
the connection drops go back to the front of the buffer, so nothing within the buffer bound is
lost across a broker restart (a consumer may see a duplicate: dedupe on `event_id`). When the
buffer is full the oldest event is dropped and counted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque

log = logging.getLogger(__name__)


class MqttSink:
    name = "mqtt"  # the daemon's sink name (its pending events, /healthz)

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        client_id: str = "finprint-daemon",
        qos: int = 1,
        buffer: int = 10000,
        max_inflight: int = 100,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.qos = qos
        self.dropped = 0
        self.published = 0  # acknowledged by the broker (or sent, for QoS 0)
        self._buffer: deque[bytes] = deque()
        self._bound = buffer
        self._inflight: dict[int, bytes] = {}
        self._max_inflight = max_inflight
        self._lock = threading.RLock()
        self._connected = threading.Event()
        self._lost_connection = threading.Event()
        self._acked: deque[int] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._host, self._port = host, port

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        # connect_async + loop_start: the daemon starts even when the broker is down, and paho's
        # network thread keeps reconnecting.
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        self._sender.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Give buffered events `timeout_s` to reach the broker, then disconnect."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        if self.pending:
            log.warning("mqtt: %d events not delivered at shutdown", self.pending)
        self._stop.set()
        self._wake.set()
        self._sender.join(5)
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buffer) + len(self._inflight) - len(self._acked)

    # -- publishing ----------------------------------------------------------------------------
    def write_events(self, events: list[dict]) -> None:
        with self._lock:
            for ev in events:
                if len(self._buffer) + len(self._inflight) >= self._bound:
                    self._buffer.popleft()
                    self.dropped += 1
                self._buffer.append(json.dumps(ev, sort_keys=True).encode())
        self._wake.set()

    def _send_loop(self) -> None:
        """The one thread that moves events from the buffer to the broker."""
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            self._pump()

    def _pump(self) -> None:
        import paho.mqtt.client as mqtt

        with self._lock:
            while self._acked:
                if self._inflight.pop(self._acked.popleft(), None) is not None:
                    self.published += 1
            if self._lost_connection.is_set():
                self._lost_connection.clear()
                # Unacknowledged messages go back first, in their order, to be sent again.
                requeue = [self._inflight[mid] for mid in sorted(self._inflight)]
                self._inflight.clear()
                self._buffer.extendleft(reversed(requeue))
            while self._buffer and self._connected.is_set() and len(self._inflight) < self._max_inflight:
                info = self._client.publish(self.topic, self._buffer[0], qos=self.qos)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break  # connection lost meanwhile: keep it buffered
                payload = self._buffer.popleft()
                if self.qos == 0:
                    self.published += 1
                else:
                    self._inflight[info.mid] = payload

    # -- paho callbacks: its network thread, holding paho's locks, so they only flag and append --
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            log.warning("mqtt: connect refused: %s", reason_code)
            return
        log.info("mqtt: connected to %s:%d", self._host, self._port)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        self._connected.clear()
        self._lost_connection.set()
        self._wake.set()
        log.warning("mqtt: disconnected (%s); events stay buffered until the broker is back", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        self._acked.append(mid)  # deque.append is atomic: no lock, so no lock-order deadlock with publish()
        self._wake.set()
