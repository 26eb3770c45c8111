"""One worker per device on every host, started by torch's elastic launcher.

SageMaker starts `train` once per host and describes the cluster in resourceconfig.json;
the hosts keep its order, so the first one is the leader and hosts the rendezvous
(torch's static rendezvous: each host's rank is its index, no election). Each host's
`train` process is the torch agent of its local workers, one per GPU (one on a CPU host
unless `workers_per_host` says otherwise): NCCL between GPUs, gloo between CPUs.

A job with one worker in all never gets here: it runs in the `train` process itself,
as it always has.

Failures end the whole job within a bounded time, with a reason:
- a worker that raises publishes its one-line reason in the rendezvous store before its
  connections close; the peers' next collective fails within seconds, and they fail
  with that reason instead of "connection reset";
- a worker that is killed closes its connections too: seconds;
- a worker that hangs inside a collective, or a host that never starts, is bounded by
  `dist_timeout` (the process group's timeout and the rendezvous timeout);
- the launcher never restarts workers (max_restarts=0): a restart with static
  rendezvous waits for peers that have moved on; a rerun resumes from the checkpoint.
Each host's `train` process then writes its host's `output/failure`: the first failing
local worker's reason.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.elastic.rendezvous import RendezvousError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from trainer.cluster import Cluster
from trainer.contract import (
    FULLY_REPLICATED,
    MASTER_ADDR_ENV,
    MASTER_PORT_ENV,
    ResourceConfig,
    TrainingPaths,
    channel_distributions,
    collective_interface_environment,
    local_rank,
    local_world_size,
    read_resource_config,
    rendezvous_address,
    training_paths,
)
from trainer.errors import ClientError, JobFailedError
from trainer.hyperparameters import Hyperparameters

log = logging.getLogger(__name__)

# What each worker runs: the job (trainer.job.run), given to `launch` by the job itself.
Job = Callable[[TrainingPaths, Hyperparameters, Cluster], None]

FAILURE_KEY = "imgcls/failure"  # the first failing worker's reason, in the rendezvous store
PEER_REASON_WAIT_S = 3.0  # how long a worker that lost a peer waits for the peer's reason


@dataclass(frozen=True)
class Plan:
    resources: ResourceConfig
    workers_per_host: int

    @property
    def world_size(self) -> int:
        return len(self.resources.hosts) * self.workers_per_host


def plan_workers(paths: TrainingPaths, hp: Hyperparameters) -> Plan:
    """The hosts from resourceconfig.json and how many workers each runs."""
    resources = read_resource_config(paths)
    workers = hp.workers_per_host or max(1, torch.cuda.device_count())
    if len(resources.hosts) > 1:
        sharded = sorted(
            name for name, kind in channel_distributions(paths).items() if kind != FULLY_REPLICATED
        )
        if sharded:
            raise ClientError(
                f"channels {', '.join(sharded)} are not FullyReplicated: every host must see "
                "every file of every channel (use FastFile input to read only what each host "
                "needs)"
            )
    return Plan(resources, workers)


def launch(plan: Plan, hp: Hyperparameters, job: Job) -> None:
    """Run `job` in each of this host's workers; raise JobFailedError with the first
    failure's reason."""
    resources = plan.resources
    address, port = rendezvous_address(resources)
    os.environ.update(collective_interface_environment(resources))
    wait_until_resolvable(address, hp.dist_timeout)
    config = LaunchConfig(
        min_nodes=len(resources.hosts),
        max_nodes=len(resources.hosts),
        nproc_per_node=plan.workers_per_host,
        run_id="imgcls",
        rdzv_backend="static",
        rdzv_endpoint=f"{address}:{port}",
        rdzv_configs={"rank": resources.host_rank, "timeout": hp.dist_timeout},
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
    )
    log.info(
        "launching %d workers on %s (host %d of %d; rendezvous %s:%d)",
        plan.workers_per_host,
        resources.current_host,
        resources.host_rank + 1,
        len(resources.hosts),
        address,
        port,
    )
    try:
        # The parsed hyperparameters and the job travel to the spawned workers (pickled:
        # the job by its module and name), read once.
        elastic_launch(config, worker)(resources.current_host, hp, job)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        raise JobFailedError(
            failure_reason(rank, resources.current_host, failure.message)
        ) from None
    except (dist.DistError, RendezvousError) as error:
        raise JobFailedError(
            f"the workers of {len(resources.hosts)} hosts did not meet at {address}:{port} "
            f"within dist_timeout={hp.dist_timeout}s: {_first_line(error)}"
        ) from None


def wait_until_resolvable(host: str, timeout_s: float) -> None:
    """SageMaker's host names can take a moment to resolve after the containers start."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.getaddrinfo(host, None)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise JobFailedError(f"host {host} did not resolve within {timeout_s}s") from None
            time.sleep(1)


def failure_reason(rank: int, host: str, message: Any) -> str:
    """One line from torch's record of a failed worker (its error file, or how it died)."""
    if isinstance(message, dict):
        text = str(message.get("message", message))
        # A job's own ClientError reads exactly as in a one-process job.
        for prefix in (f"{ClientError.__name__}: ", f"{JobFailedError.__name__}: "):
            if text.startswith(prefix):
                return _one_line(text.removeprefix(prefix))
        return _one_line(f"worker {rank} on {host} failed: {text}")
    return _one_line(f"worker {rank} on {host} stopped: {message}")


def _one_line(text: str, limit: int = 1000) -> str:
    """SageMaker shows the first 1024 characters of the failure file."""
    return " ".join(text.split())[:limit]


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# ------------------------------------------------------------------------ in each worker


def worker(host: str, hp: Hyperparameters, job: Job) -> None:
    """A worker process: join the process group, run `job`, report a failure."""
    paths = training_paths()
    cluster = join_process_group(hp, host)
    # A spawned process starts without the toolkit's logging configuration.
    logging.basicConfig(
        format=f"%(asctime)s [{host} worker {cluster.rank}] %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("trainer").setLevel(logging.INFO)
    try:
        job(paths, hp, cluster)
    except JobFailedError as error:
        publish_failure(str(error))
        raise
    except ClientError as error:
        publish_failure(f"worker {cluster.rank} on {host}: {error}")
        raise
    except Exception as error:
        if not lost_a_peer(error):
            publish_failure(f"worker {cluster.rank} on {host}: {type(error).__name__}: {error}")
            raise
        # A peer failed first (its connections closed): say why, when it could tell.
        reason = peer_failure() or (
            f"worker {cluster.rank} on {host} lost contact with another worker (killed, or "
            f"its host failed): {_first_line(error)}"
        )
        publish_failure(reason)
        raise JobFailedError(reason) from error
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# What gloo and NCCL say when a peer's connection breaks; DDP's gradient reduction raises
# them as plain RuntimeErrors, not as torch.distributed.DistError.
LOST_PEER_SIGNS = ("Connection closed by peer", "Connection reset by peer", "NCCL", "gloo")


def lost_a_peer(error: BaseException) -> bool:
    return isinstance(error, dist.DistError) or any(sign in str(error) for sign in LOST_PEER_SIGNS)


def join_process_group(hp: Hyperparameters, host: str) -> Cluster:
    timeout = timedelta(seconds=hp.dist_timeout)
    local_workers = local_world_size()
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=timeout)
        # Share the host's cores instead of every worker starting one thread per core.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_workers))
    return Cluster(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_world_size=local_workers,
        host=host,
        device=device,
    )


def _store() -> dist.TCPStore:
    """A client of the rendezvous store the leader's launcher hosts."""
    return dist.TCPStore(
        os.environ[MASTER_ADDR_ENV],
        int(os.environ[MASTER_PORT_ENV]),
        is_master=False,
        timeout=timedelta(seconds=PEER_REASON_WAIT_S),
    )


def publish_failure(reason: str) -> None:
    """The first reason published wins; best effort (the store may be gone already)."""
    try:
        _store().compare_set(FAILURE_KEY, "", _one_line(reason))
    except Exception as error:  # the job fails anyway; this only adds a reason
        log.debug("could not publish a failure reason: %s", error)


def peer_failure() -> str | None:
    try:
        return _store().get(FAILURE_KEY).decode()
    except Exception:  # no peer published a reason in time
        return None
