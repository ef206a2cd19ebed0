"""Version discovery and the availability-preserving version policy of TF Serving.

Layout: `base_path/<integer version>/saved_model.pb` (+ variables/, assets/). The manager polls
the base path every `poll_seconds`; directories whose name is not an integer, or that hold no
`saved_model.pb` yet (TFX's Pusher copies it last), are ignored. The policy is TF Serving's
default `latest { num_versions: 1 }`: the highest version is aspired; a new version is loaded
while the old one keeps serving, then requests switch to it, then the old one is unloaded
(drained), so no request fails during a swap. A version that fails to load is marked END with
its error (GetModelStatus shows it), logged, and not retried until its saved_model.pb changes;
the version that was serving keeps serving.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Callable

import grpc

from sicot.paths import absolute
from sicot.serving.batching import BatchingOptions
from sicot.serving.errors import ServingError, not_found
from sicot.serving.servable import LoadedModel

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class VersionState:
    """A version's state as GetModelStatus reports it (ModelVersionStatus.State names)."""

    version: int
    state: str  # START | LOADING | AVAILABLE | UNLOADING | END
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


def discover_versions(base_path: str) -> dict[int, str]:
    """`{version: directory}` for every complete version under `base_path`."""
    import tensorflow as tf

    gfile = tf.io.gfile  # a local folder or any remote scheme TF reads (gs://...)
    found = {}
    try:
        entries = gfile.listdir(base_path)
    except tf.errors.NotFoundError:
        return found
    for entry in entries:
        entry = entry.rstrip("/")  # object stores list folders with a trailing slash
        if not entry.isdigit():  # temp dirs, '.tmp-123', 'latest' ...
            continue
        path = os.path.join(base_path, entry)
        if gfile.exists(os.path.join(path, "saved_model.pb")):
            found[int(entry)] = path
    return found


def _fingerprint(export_dir: str) -> tuple:
    import tensorflow as tf

    st = tf.io.gfile.stat(os.path.join(export_dir, "saved_model.pb"))
    return (st.mtime_nsec, st.length)


class ModelManager:
    """Serves the latest version of one model from a TF Serving base path.

    Args:
      model_name: the name clients use.
      base_path: directory holding integer version subdirectories.
      poll_seconds: how often to look for new versions (TF Serving's
        --file_system_poll_wait_seconds); 0 disables polling after the first look.
      batching: BatchingOptions, or None for direct calls.
      on_batch: `(signature_name, rows)` callback for every signature call.
      on_change: called with no arguments after every load or unload (for metrics).
      arriving: the server's count of requests not yet submitted, for the batchers (see
        SignatureBatcher).
    """

    def __init__(self, model_name: str, base_path: str, poll_seconds: float = 2.0,
                 batching: BatchingOptions | None = None,
                 on_batch: Callable[[str, int], None] | None = None,
                 on_change: Callable[[], None] | None = None,
                 arriving: Callable[[], int] | None = None):
        self.model_name = model_name
        self.base_path = absolute(base_path)
        self.poll_seconds = poll_seconds
        self.batching = batching
        self.on_batch = on_batch
        self.on_change = on_change
        self.arriving = arriving
        self._serving: dict[int, LoadedModel] = {}  # replaced, never mutated: lock-free reads
        self._states: dict[int, VersionState] = {}
        self._failed: dict[int, tuple] = {}  # version -> fingerprint of the saved_model.pb that failed
        self._state_lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Loads the latest version now (so the server starts ready), then polls in the background."""
        self.poll_once()
        if not self._serving:
            log.warning("No versions of servable %s found under base path %s",
                        self.model_name, self.base_path)
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        serving, self._serving = self._serving, {}
        for loaded in serving.values():
            loaded.close()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # never let the poller die: the server must keep serving
                log.exception("Polling %s failed", self.base_path)

    # -- policy ------------------------------------------------------------------------------
    def _set_state(self, state: VersionState) -> None:
        with self._state_lock:
            self._states[state.version] = state

    def poll_once(self) -> None:
        """One look at the base path: load the aspired version if needed, then unload the rest."""
        with self._poll_lock:
            on_disk = discover_versions(self.base_path)
            candidates = sorted(on_disk, reverse=True)
            for version in candidates:  # highest loadable version: latest{1}
                if version in self._serving:
                    aspired = version
                    break
                try:
                    if self._failed.get(version) == _fingerprint(on_disk[version]):
                        continue  # this exact export failed before; keep looking lower
                except OSError:  # removed while we looked
                    continue
                if self._load(version, on_disk[version]):
                    aspired = version
                    break
                if self._serving:
                    # Keep serving what we have rather than falling back to older versions.
                    aspired = max(self._serving)
                    break
            else:
                return
            for version in [v for v in self._serving if v != aspired]:
                self._unload(version)

    def _load(self, version: int, export_dir: str) -> bool:
        self._set_state(VersionState(version, "LOADING"))
        log.info("Loading servable version {name: %s version: %d} from %s",
                 self.model_name, version, export_dir)
        started = time.monotonic()
        try:
            fingerprint = _fingerprint(export_dir)
            loaded = LoadedModel(self.model_name, version, export_dir,
                                 batching=self.batching, on_batch=self.on_batch,
                                 arriving=self.arriving)
        except Exception as e:
            message = f"Failed to load version {version} of model {self.model_name} from {export_dir}: " \
                      f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.error("%s (still serving versions %s)", message, sorted(self._serving) or "none")
            try:
                self._failed[version] = _fingerprint(export_dir)
            except OSError:
                pass
            self._set_state(VersionState(version, "END", grpc.StatusCode.UNKNOWN, message))
            if self.on_change:
                self.on_change()
            return False
        self._failed.pop(version, None)
        serving = dict(self._serving)
        serving[version] = loaded
        self._serving = serving  # requests without a version now go to the highest loaded
        self._set_state(VersionState(version, "AVAILABLE"))
        log.info("Successfully loaded servable version {name: %s version: %d} in %.1fs (%s)",
                 self.model_name, version, time.monotonic() - started, fingerprint)
        if self.on_change:
            self.on_change()
        return True

    def _unload(self, version: int) -> None:
        loaded = self._serving[version]
        self._set_state(VersionState(version, "UNLOADING"))
        self._serving = {v: m for v, m in self._serving.items() if v != version}
        loaded.close()  # queued batched requests still complete
        self._set_state(VersionState(version, "END"))
        log.info("Unloaded servable version {name: %s version: %d}", self.model_name, version)
        if self.on_change:
            self.on_change()

    # -- lookups -----------------------------------------------------------------------------
    def _check_name(self, model_name: str, version: int | None) -> None:
        if model_name != self.model_name:
            spec = f"Specific({model_name}, {version})" if version is not None else f"Latest({model_name})"
            raise not_found(f"Servable not found for request: {spec} "
                            f"(this server serves model '{self.model_name}')")

    def get(self, model_name: str, version: int | None = None) -> LoadedModel:
        """The loaded model for a request: the given version, or the latest when None."""
        self._check_name(model_name, version)
        serving = self._serving
        if version is None:
            if not serving:
                raise not_found(f"Servable not found for request: Latest({model_name}) "
                                f"(no version loaded from {self.base_path} yet)")
            return serving[max(serving)]
        if version not in serving:
            raise not_found(f"Servable not found for request: Specific({model_name}, {version}) "
                            f"(loaded versions: {sorted(serving) or 'none'})")
        return serving[version]

    def loaded_versions(self) -> list[int]:
        return sorted(self._serving)

    def states(self, model_name: str, version: int | None = None) -> list[VersionState]:
        """Version states for GetModelStatus, NOT_FOUND as TF Serving words it."""
        if model_name != self.model_name:
            raise not_found(f"Could not find any versions of model {model_name}")
        with self._state_lock:
            states = dict(self._states)
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {model_name}")
            return [states[version]]
        if not states:
            raise not_found(f"Could not find any versions of model {model_name}")
        return [states[v] for v in sorted(states)]


__all__ = ["ModelManager", "VersionState", "discover_versions", "ServingError"]
