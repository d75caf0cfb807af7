"""The real-browser widget check, part 2: processes and the JupyterLab server it starts and stops.

See ``browser_harness.py`` for what the check does.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from browser_notebooks import NOOP_ENV, T_SERVER

# ------------------------------------------------------------------------------ processes
def process_tree(pid: int) -> list:
    """``pid`` and all its descendants (psutil processes; empty if gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def processes_mentioning(marker: str) -> list[str]:
    """``"pid cmdline"`` of every live process whose command line contains ``marker``."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd and p.info["pid"] != os.getpid():
            found.append(f"{p.info['pid']} {cmd[:160]}")
    return found


def processes_by_marker(marker: str) -> list:
    """psutil processes (still alive) whose command line contains ``marker``."""
    import psutil

    out = []
    for line in processes_mentioning(marker):
        try:
            out.append(psutil.Process(int(line.split()[0])))
        except psutil.NoSuchProcess:
            pass
    return out


def kill_all(procs: list, timeout: float = 10) -> None:
    """SIGTERM, wait, then SIGKILL whatever of ``procs`` is still alive."""
    import psutil

    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


# ------------------------------------------------------------------------------ server
def _resolve_prctl():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _resolve_prctl()     # resolved here: the forked child only calls it, imports nothing


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM it when the thread that started it ends,
    even by SIGKILL, so a killed test run leaves no server behind (the server then shuts its
    kernels down). Start servers from the main thread. Elsewhere a no-op."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)          # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """One ``jupyter lab`` on 127.0.0.1, a free port, a random token, clean settings in ``scratch``.

    ``env`` entries are added to (``None``: removed from) the server's environment, which the
    kernels inherit. :meth:`stop` is idempotent and also ends the kernels, even orphaned ones
    (found by the scratch path in their command line).
    """

    def __init__(self, root: Path, scratch: Path, env: dict[str, str | None] | None = None):
        self.root, self.scratch = Path(root), Path(scratch)
        self.port, self.token = free_port(), secrets.token_urlsafe(24)
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.scratch / "lab.log"
        self._env = env or {}

    def start(self) -> "LabServer":
        self.scratch.mkdir(parents=True, exist_ok=True)
        cfg = self.scratch / "jupyter_config"
        cfg.mkdir(exist_ok=True)
        (cfg / "jupyter_server_config.py").write_text(
            "c.LabApp.news_url = None\n"
            "c.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'\n"
            "c.LabApp.extension_manager = 'readonly'\n"
            # JupyterLab makes a checkpoint when it opens a file: keep it out of notebooks/
            f"c.FileCheckpoints.checkpoint_dir = {str(self.scratch / 'checkpoints')!r}\n")
        settings = self.scratch / "lab_settings" / "@jupyterlab"
        overrides = {
            # no news toast, no update check (outside traffic); the config alone is not enough
            "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
            # every cell attached to the DOM, so selectors always find it
            "notebook-extension/tracker": {"windowingMode": "none"},
            # never write the notebooks under test back to disk
            "docmanager-extension/plugin": {"autosave": False},
        }
        for name, value in overrides.items():
            f = settings / f"{name}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(value))
        env = dict(os.environ,
                   JUPYTER_CONFIG_DIR=str(cfg),
                   JUPYTERLAB_SETTINGS_DIR=str(self.scratch / "lab_settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(self.scratch / "lab_workspaces"),
                   JUPYTER_RUNTIME_DIR=str(self.scratch / "runtime"),
                   IPYTHONDIR=str(self.scratch / "ipython"),
                   MINIMAMBA_QUICK="1")
        env.pop("MPLBACKEND", None)    # `make test` sets agg: the kernels would draw nothing inline
        # One torch thread per kernel: the workers run kernels side by side on a 2-core box, and
        # oversubscribed intra-op threads make the tiny models' small ops ~10x slower (measured:
        # 50 decoding steps of the shipped Shakespeare model, 0.17 s CPU with 1 thread against
        # 2.6 s with 2 on a busy 2-core machine).
        env.setdefault("OMP_NUM_THREADS", "1")
        env.pop(NOOP_ENV, None)
        for k, v in self._env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}"]
        if os.geteuid() == 0:          # CI runs as root: JupyterLab refuses without this
            cmd.append("--allow-root")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        deadline = time.time() + T_SERVER
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}",
                                            timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"jupyter lab did not answer within {T_SERVER} s:\n{self.log_tail()}")

    def api(self, path: str):
        with urllib.request.urlopen(f"{self.base}/api/{path}?token={self.token}", timeout=10) as r:
            return json.load(r)

    def kernel_state(self, notebook: str) -> str | None:
        """``execution_state`` of the kernel of the session whose path is ``notebook``."""
        for sess in self.api("sessions"):
            if sess["path"] == notebook:
                return sess["kernel"]["execution_state"]
        return None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "".join(self.log_path.read_text().splitlines(True)[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the server's process group (it shuts its kernels down), then make sure."""
        if self.proc is None:
            return
        tree = process_tree(self.proc.pid)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        # kernels run in their own sessions: end any left (descendants seen, or by command line)
        left = [p for p in tree if p.is_running()] + processes_by_marker(str(self.scratch))
        if left:
            kill_all(left)
        self.proc = None
