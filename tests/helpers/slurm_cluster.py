"""A one-node SLURM cluster on this machine, for the tests (and to try the launcher by hand):

    python tests/helpers/slurm_cluster.py FOLDER     # starts it, prints SLURM_CONF=..., waits

Debian's munge, slurmctld, slurmd and slurm-client (Slurm 22.05 on bookworm); every file of the
cluster (its slurm.conf, munge key and socket, state, spool, logs) is in one folder, and the
daemons listen on free ports, so several clusters (two test sessions) can run side by side and
nothing of the system's own configuration is used. Needs root: slurmd starts jobs as their user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")
PARTITION = "debug"
# A requeued job waits this long before it may start again (Slurm's default: 120 s + 1).
REQUEUE_DELAY_S = 5


def missing() -> str | None:
    """Why no cluster can be started here, or None."""
    absent = [name for name in DAEMONS if shutil.which(name) is None]
    if absent:
        return (
            f"needs SLURM and munge ({', '.join(absent)} not found): "
            "apt-get install slurmctld slurmd slurm-client munge"
        )
    if os.geteuid() != 0:
        return "needs root to start slurmd (it starts each job as its user)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "needs the munge user (Debian's munge package makes it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(folder: Path, node: str, cpus: int, memory_mb: int) -> str:
    munge_socket = folder / "munge" / "munge.socket"
    return "\n".join(
        [
            f"ClusterName=vit{os.getpid()}",
            f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket},cred_expire={REQUEUE_DELAY_S}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool' / '%n'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2",  # pending jobs looked at every 2 s
            "MpiDefault=none",
            "ReturnToService=2",
            "JobCompType=jobcomp/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SlurmdParameters=config_overrides",  # the node is what this file says, not the machine
            "MinJobAge=300",  # finished jobs stay visible to squeue/scontrol for 5 minutes
            f"NodeName={node} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 "
            f"CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
            # a partition no job of the defaults fits (Reason=PartitionConfig)
            f"PartitionName=short Nodes={node} MaxTime=1 State=UP",
            "",
        ]
    )


class Cluster:
    """munged, slurmctld and slurmd in ``folder``; ``env`` is what a client needs (SLURM_CONF)."""

    def __init__(self, folder: Path, cpus: int = 2, memory_mb: int = 4000) -> None:
        # cpus and memory_mb are what slurm.conf says the node has (config_overrides), not checked
        # against the machine: a test may claim more CPUs than it has, to run jobs side by side.
        self.folder = folder
        self.node = f"n{os.getpid()}"
        self.cpus, self.memory_mb = cpus, memory_mb
        self.processes: list[subprocess.Popen] = []
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}

    def start(self, timeout: float = 60) -> Cluster:
        folder = self.folder
        for sub in ("state", "spool", "munge"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        self._start_munge(folder / "munge")
        (folder / "slurm.conf").write_text(slurm_conf(folder, self.node, self.cpus, self.memory_mb))
        for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", self.node]):
            log = open(folder / f"{daemon[0]}.out", "w")  # noqa: SIM115 (closed with the process)
            self.processes.append(
                subprocess.Popen(daemon, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            )
        self._wait_until_idle(timeout)
        return self

    def _start_munge(self, folder: Path) -> None:
        """munged as the munge user, with its own key and socket in ``folder``."""
        munge = pwd.getpwnam("munge")
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for path in (folder, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        folder.chmod(0o700)
        self.processes.append(
            subprocess.Popen(
                [
                    "munged",
                    "-F",
                    "--force",
                    f"--socket={folder / 'munge.socket'}",
                    f"--key-file={key}",
                    f"--pid-file={folder / 'munged.pid'}",
                    f"--log-file={folder / 'munged.log'}",
                    f"--seed-file={folder / 'munged.seed'}",
                ],
                user=munge.pw_uid,
                group=munge.pw_gid,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + 10
        while not (folder / "munge.socket").exists():
            if time.monotonic() > deadline or self.processes[-1].poll() is not None:
                raise RuntimeError(f"munged did not start: see {folder / 'munged.log'}")
            time.sleep(0.05)

    def _wait_until_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited: {self.logs()}")
            state = self.run("sinfo", "-h", "-n", self.node, "-o", "%t", check=False).strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"the node is {state or 'not up'} after {timeout:.0f} s: {self.logs()}")

    def run(self, *command: str, check: bool = True) -> str:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=30)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
        return result.stdout

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.folder.glob("*.log"))
        )

    def stop(self) -> None:
        """Ends the daemons, the cluster's jobs with them (slurmd's job steps are its children)."""
        if self.processes and self.processes[-1].poll() is None:
            self.run("scancel", "--full", "--partition", PARTITION, check=False)
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    cluster = Cluster(Path(sys.argv[1]).resolve()).start()
    print(f"SLURM_CONF={cluster.env['SLURM_CONF']}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cluster.stop()
