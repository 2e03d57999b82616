"""Per-host state of a rollout, in the work directory, so a rerun resumes.

``WORKDIR/fleet/BUNDLE_ID/`` holds one rollout (a bundle identifies it):

- ``hosts/NAME.json``: where that host is (``pending`` -> ``installing`` ->
  ``installed`` -> ``rebooting`` -> ``rebooted`` -> ``verified``; or ``failed``,
  ``rolling-back``, ``rolled-back``), the bundle's sha256, the boot ids before
  and after the reboot, how many times each step ran, the failing checks.
  Written atomically (temp file, fsync, rename) at every transition, BEFORE the
  action it announces when the action cannot be undone (a reboot), so a run
  killed at any instant leaves a state the next run continues from.
- ``hosts/NAME/``: that host's own work directory (its install record, the
  one ``rollback`` reads, and ``rollout.log`` with every command and plan).
- ``rollout.json``: the last run's report.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import atomic_write_json
from toa_kernel.core.state import now_iso

PENDING = "pending"
INSTALLING = "installing"
INSTALLED = "installed"
REBOOTING = "rebooting"
REBOOTED = "rebooted"
VERIFIED = "verified"
FAILED = "failed"
ROLLING_BACK = "rolling-back"
ROLLED_BACK = "rolled-back"
STATUSES = (PENDING, INSTALLING, INSTALLED, REBOOTING, REBOOTED, VERIFIED, FAILED, ROLLING_BACK, ROLLED_BACK)
DONE = (VERIFIED,)
FAILURES = (FAILED, ROLLED_BACK)
SCHEMA = 1


@dataclass
class RebootRecord:
    """One reboot: the boot before it, when it was asked for and sent, the boot after."""

    boot_id_before: str | None = None
    requested_at: float | None = None  # epoch seconds, saved before the reboot is sent
    sent_at: float | None = None  # saved once the reboot command (or hook) returned
    boot_id_after: str | None = None
    seconds: float | None = None

    @classmethod
    def from_dict(cls, data: Any) -> RebootRecord | None:
        if not isinstance(data, dict):
            return None
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


@dataclass
class HostState:
    """Where one host is in the rollout of one bundle."""

    host: str
    bundle: str
    status: str = PENDING
    step: str = ""  # the last step reached: preflight, ship, install, reboot, verify, commit, rollback
    release_before: str | None = None  # the running release when the rollout first saw the host
    release_now: str | None = None
    installs: int = 0
    reboots: int = 0
    rollbacks: int = 0
    reboot: RebootRecord | None = None
    rollback_reboot: RebootRecord | None = None
    failed: dict[str, Any] | None = None  # step, message, fix, checks
    seconds: dict[str, float] = field(default_factory=dict)
    history: list[list[str]] = field(default_factory=list)  # [time, status, step]
    updated_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["schema"] = SCHEMA
        return document

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> HostState:
        try:
            state = cls(
                **{
                    k: data[k]
                    for k in cls.__dataclass_fields__
                    if k in data and k not in ("reboot", "rollback_reboot")
                }
            )
        except TypeError as exc:
            raise corrupt(path, str(exc)) from None
        if state.status not in STATUSES:
            raise corrupt(path, f"unknown status {state.status!r}")
        state.reboot = RebootRecord.from_dict(data.get("reboot"))
        state.rollback_reboot = RebootRecord.from_dict(data.get("rollback_reboot"))
        return state


def corrupt(path: Path, why: str) -> UserError:
    return UserError(
        f"the rollout state {path} cannot be read: {why}",
        "look at it (it records where that host is); move it aside only if the host was checked by hand",
    )


class RolloutDir:
    """``WORKDIR/fleet/BUNDLE_ID``: host states, host work directories, the last report."""

    def __init__(self, workdir: Path, bundle_id: str) -> None:
        self.path = Path(workdir) / "fleet" / bundle_id
        self.lock = threading.Lock()

    @property
    def hosts_dir(self) -> Path:
        return self.path / "hosts"

    def state_path(self, host: str) -> Path:
        return self.hosts_dir / f"{host}.json"

    def host_workdir(self, host: str) -> Path:
        return self.hosts_dir / host

    @property
    def report_path(self) -> Path:
        return self.path / "rollout.json"

    def load(self, host: str, bundle_sha256: str) -> HostState:
        """The host's state (a fresh one when the host was never touched by this rollout)."""
        path = self.state_path(host)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return HostState(host=host, bundle=bundle_sha256)
        except (OSError, ValueError) as exc:
            raise corrupt(path, str(exc)) from None
        if not isinstance(data, dict):
            raise corrupt(path, "not a JSON object")
        state = HostState.from_dict(data, path)
        if state.bundle != bundle_sha256:
            raise corrupt(path, f"it is for bundle {state.bundle[:12]}, not {bundle_sha256[:12]}")
        return state

    def save(self, state: HostState, status: str | None = None, step: str | None = None) -> HostState:
        """Record a transition (atomically) and return the state."""
        if status is not None:
            state.status = status
        if step is not None:
            state.step = step
        state.updated_at = now_iso()
        state.history.append([state.updated_at, state.status, state.step])
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        with self.lock:
            atomic_write_json(self.state_path(state.host), state.as_dict())
        return state

    def write_report(self, document: dict[str, Any]) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(self.report_path, document)
