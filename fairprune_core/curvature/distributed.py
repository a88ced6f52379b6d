"""A pool of Ray actors that computes per-group curvature sums in parallel.

:class:`CurvaturePool` is a drop-in :class:`fairprune_core.pruning.CurvatureBackend`: FairPrune
and OBD call it exactly like the single-process :class:`~fairprune_core.pruning.LocalCurvature`,
and the result is the same (float32 precision) for any number of workers.

How the work moves:

* one actor per GPU (``gpus_per_worker=1``), or CPU actors each with ``cpus_per_worker`` cores
  and as many torch threads, when there is no GPU;
* the pixels of each group reach the object store ONCE (one ``ray.put`` per source, on first
  use); each actor fetches them once (zero-copy on its node) and keeps them;
* once per pruning step the current weights (pruned ones are zero) go out in ONE ``ray.put``;
  each actor receives the index lists of its shard of that step's mini-batches (contiguous,
  possibly uneven), computes curvature SUMS and counts per group and returns them; the driver
  reduces them in float64;
* mini-batch ``i`` of step ``t`` for group ``tag`` is seeded from ``(seed, tag, t, i)``, so
  the sharding never changes an ``mc`` estimate.

Faults: actors restart (``max_restarts``) and Ray retries the interrupted task on the restarted
actor; if that still fails, the pool replaces the actor and recomputes its shard. Either way the
step's result is the one it would have been without the fault.

Inside a Ray Tune trial the actors land in the trial's placement group automatically (the trial
must reserve one bundle per worker, see :func:`worker_bundles`); outside one they are spread
over nodes. Ray is imported only when a pool is created.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import ModelConfig
from .hessian import CurvatureConfig, DiagSums, batch_seed

__all__ = [
    "CurvaturePool",
    "PoolResourcesError",
    "auto_gpus_per_worker",
    "check_resources",
    "cluster_node_count",
    "ensure_ray",
    "worker_bundles",
]


class PoolResourcesError(RuntimeError):
    """The cluster can never provide what the pool asks for."""


def ensure_ray(
    address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True, preload: Sequence[str] = ()
) -> None:
    """Connect to Ray if not connected: ``address`` or ``$RAY_ADDRESS`` if set, else a PRIVATE local
    Ray started here (``address="local"``): never a cluster that merely happens to run on this
    machine (Ray's own default would join the latest one started with ``ray start``). A private
    Ray's idle workers (one per CPU, started at once) import the ``preload`` modules."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": not quiet, "include_dashboard": False}
    if address and address != "local":
        ray.init(address=address, **kwargs)
    else:
        config = {"preload_python_modules": list(preload)} if preload else None
        ray.init(address="local", num_cpus=num_cpus, _system_config=config, **kwargs)


def worker_bundles(num_workers: int, *, cpus_per_worker: float = 1, gpus_per_worker: float = 0) -> list[dict]:
    """Placement-group bundles a Tune trial must reserve for its curvature workers."""
    bundle: dict[str, float] = {"CPU": cpus_per_worker}
    if gpus_per_worker:
        bundle["GPU"] = gpus_per_worker
    return [dict(bundle) for _ in range(num_workers)]


def auto_gpus_per_worker() -> float:
    """1 GPU per curvature worker when the connected cluster has GPUs, else 0."""
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def cluster_node_count() -> int:
    """Nodes of the connected Ray cluster that are alive."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def _autoscaler_view() -> tuple[dict[str, float], bool]:
    """The autoscaler's resource ceiling, and whether a cluster-launcher autoscaler (v1) manages
    node types that could add resources.

    Ray has no public API for either, so both private calls sit here (an upgrade touches this one
    function): ``ray._private.state``'s ceiling (Ray >= 2.10; empty without an autoscaler), and the
    autoscaler's status in the internal KV store, whose node types are named after the cluster YAML
    (a local ``ray.init()`` or nodes started by hand report ``node_<id>`` types, which no autoscaler
    adds to). Either failing reads as "no autoscaler".
    """
    import json

    try:
        from ray._private.state import state

        ceiling = dict(state.get_max_resources_from_cluster_config() or {})
    except Exception:
        ceiling = {}
    try:
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get("__autoscaling_status")
        report = (json.loads(raw) if raw else {}).get("autoscaler_report") or {}
        types = set((report.get("node_type_mapping") or {}).values())
    except Exception:
        types = set()
    return ceiling, any(not t.startswith("node_") for t in types)


def _max_possible_resources(ceiling: dict[str, float]) -> dict[str, float]:
    """What the cluster has now, or could have with its autoscaler (whichever is larger)."""
    import ray

    now = dict(ray.cluster_resources())
    return {k: max(now.get(k, 0), ceiling.get(k, 0)) for k in set(now) | set(ceiling)}


def check_resources(num_workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    """Raise :class:`PoolResourcesError` when no node could ever host one worker or all of them.

    On an autoscaling cluster whose ceiling is not published (the cluster launcher's v1
    autoscaler), a shortfall is not an error: the autoscaler may add nodes, and the pool's
    startup timeout bounds the wait.
    """
    import ray

    if ray.util.get_current_placement_group() is not None:
        return  # a Tune trial: its placement group already reserved the bundles
    ceiling, launcher = _autoscaler_view()
    possible = _max_possible_resources(ceiling)
    for key, per in (("GPU", gpus_per_worker), ("CPU", cpus_per_worker)):
        need = per * num_workers
        have = possible.get(key, 0)
        if per and have < need:
            if launcher:
                print(
                    f"the cluster has {have:g} {key} now; waiting for its autoscaler to add {need:g} {key} "
                    f"for the curvature workers",
                    file=sys.stderr,
                )
                return
            hint = (
                "use CPU workers (--gpus-per-worker 0) or connect to a GPU cluster (--address / RAY_ADDRESS)"
                if key == "GPU"
                else "use fewer workers or fewer CPUs per worker"
            )
            raise PoolResourcesError(
                f"the curvature pool asks for {num_workers} workers x {per:g} {key} = {need:g} {key}, "
                f"but this Ray cluster has (and can scale to) {have:g} {key}; {hint}"
            )


@dataclass(frozen=True)
class _Work:
    """One mini-batch of one source: what a worker needs besides the pixels."""

    tag: str
    source: str
    index: np.ndarray
    seed: int


class _CurvatureWorker:
    """A Ray actor: a model replica, the groups' pixels, and a curvature engine."""

    def __init__(self, model_config: dict, curvature: CurvatureConfig, threads: int, use_gpu: bool) -> None:
        from ..models import build_model
        from .hessian import make_engine

        torch.set_num_threads(max(1, threads))
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.engine = make_engine(build_model(ModelConfig(**model_config)), curvature, device=self.device)
        self.data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.weights_version: Any = None

    def info(self) -> dict[str, Any]:
        import ray

        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
        }

    def compute(self, weights: Any, version: int, work: list[_Work], sources: dict[str, list]) -> dict[str, Any]:
        import ray

        from ..models import to_model_input

        t0 = time.perf_counter()
        if self.weights_version != version:
            self.engine.load_state_dict(ray.get(weights[0]) if isinstance(weights, list) else weights)
            self.weights_version = version
        for key in {w.source for w in work} - set(self.data):
            images, labels = ray.get(sources[key])  # once per source and actor (zero-copy locally)
            self.data[key] = (images, labels)
        sums: dict[str, DiagSums] = {}
        for w in work:
            images, labels = self.data[w.source]
            x = to_model_input(torch.from_numpy(np.ascontiguousarray(images[w.index])))
            y = torch.from_numpy(labels[w.index].astype(np.int64))
            part = self.engine.batch_sums(x, y, seed=w.seed)
            sums[w.tag] = sums.get(w.tag, DiagSums.zero()) + part
        compute_s = time.perf_counter() - t0
        return {
            "pid": os.getpid(),
            "compute_s": compute_s,
            # float32 halves the bytes returned; partial sums are exact to float32 precision
            "sums": {tag: (_host_float32(d.sums), d.count) for tag, d in sums.items()},
        }


@dataclass
class PoolStats:
    steps: int = 0
    batches: int = 0
    samples: int = 0
    wall_s: float = 0.0  # driver time inside compute()
    worker_compute_s: float = 0.0  # summed over workers
    max_worker_compute_s: float = 0.0  # summed over steps: the slowest worker of each step
    bytes_weights: int = 0  # put into the object store (once per step)
    bytes_data: int = 0  # pixels put into the object store (once per source)
    bytes_returned: int = 0  # curvature sums returned by workers
    restarts: int = 0  # actors restarted by Ray mid-step (the task was retried)
    replacements: int = 0  # actors the pool replaced after an unrecoverable failure
    per_step: list[dict[str, float]] = field(default_factory=list)


class CurvaturePool:
    """Ray actors computing curvature sums, as a :class:`~fairprune_core.pruning.CurvatureBackend`.

    ``num_workers`` actors, each with ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs
    (default: 1 GPU each when the cluster has GPUs, else 0). Sources must be
    :class:`~fairprune_core.pruning.GroupSampler` objects (their pixels go to the workers once).
    Use as a context manager, or call :meth:`shutdown`.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        config: CurvatureConfig,
        *,
        num_workers: int = 2,
        cpus_per_worker: float = 1,
        gpus_per_worker: float | None = None,
        threads_per_worker: int | None = None,
        max_restarts: int = 3,
        startup_timeout_s: float = 600.0,
        address: str | None = None,
    ) -> None:
        import ray

        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        ensure_ray(address)
        if gpus_per_worker is None:
            gpus_per_worker = auto_gpus_per_worker()
        check_resources(num_workers, cpus_per_worker, gpus_per_worker)
        self.config = config
        self.model_config = model_config
        self.num_workers = num_workers
        self.stats = PoolStats()
        self._threads = threads_per_worker or max(1, int(cpus_per_worker))
        self._gpus = gpus_per_worker
        self._cpus = cpus_per_worker
        self._max_restarts = max_restarts
        self._sources: dict[int, tuple[str, Any, Any]] = {}  # id(sampler) -> (key, sampler, refs)
        self._version = 0
        self._actor_cls = ray.remote(_CurvatureWorker)
        self.actors = [self._new_actor() for _ in range(num_workers)]
        self._pids = self._wait_ready(startup_timeout_s)

    # -- actors -----------------------------------------------------------------------------
    def _new_actor(self) -> Any:
        import ray

        options: dict[str, Any] = dict(
            num_cpus=self._cpus,
            num_gpus=self._gpus,
            max_restarts=self._max_restarts,
            max_task_retries=self._max_restarts,
        )
        if ray.util.get_current_placement_group() is None:
            options["scheduling_strategy"] = "SPREAD"
        return self._actor_cls.options(**options).remote(
            self.model_config.to_dict(), self.config, self._threads, self._gpus > 0
        )

    def _wait_ready(self, timeout_s: float) -> list[int]:
        import ray

        refs = [a.info.remote() for a in self.actors]
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if pending:
            raise PoolResourcesError(
                f"only {len(ready)} of {self.num_workers} curvature workers started within {timeout_s:.0f}s "
                f"(each needs {self._cpus:g} CPU, {self._gpus:g} GPU); the cluster has "
                f"{dict(ray.available_resources())} available. Use fewer workers or add nodes."
            )
        self.worker_info = ray.get(refs)
        return [i["pid"] for i in self.worker_info]

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def __enter__(self) -> CurvaturePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- data -------------------------------------------------------------------------------
    def _source_refs(self, sampler: Any) -> tuple[str, list]:
        import ray

        entry = self._sources.get(id(sampler))
        if entry is None or entry[1] is not sampler:
            if not (hasattr(sampler, "plan") and hasattr(sampler, "images") and hasattr(sampler, "labels")):
                raise TypeError(
                    "CurvaturePool needs GroupSampler sources (their pixels are shipped to the workers once); "
                    f"got {type(sampler).__name__}"
                )
            images = np.ascontiguousarray(sampler.images)
            labels = np.ascontiguousarray(sampler.labels)
            refs = [ray.put(images), ray.put(labels)]
            self.stats.bytes_data += images.nbytes + labels.nbytes
            key = f"src{len(self._sources)}"
            entry = (key, sampler, refs)
            self._sources[id(sampler)] = entry
        return entry[0], entry[2]

    # -- the backend interface --------------------------------------------------------------
    def compute(self, model: nn.Module, requests: Sequence[tuple[str, Any]], step: int) -> dict[str, DiagSums]:
        import ray

        t0 = time.perf_counter()
        work: list[_Work] = []
        sources: dict[str, list] = {}
        for tag, sampler in requests:
            key, refs = self._source_refs(sampler)
            sources[key] = refs
            for i, index in enumerate(sampler.plan(step)):
                work.append(_Work(tag, key, index, batch_seed(self.config.seed, tag, step, i)))
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        weights = ray.put(state)  # ONE copy per step, shared by every actor
        self._version += 1
        self.stats.bytes_weights += sum(v.numel() * v.element_size() for v in state.values())
        shards = np.array_split(np.arange(len(work)), min(self.num_workers, max(1, len(work))))
        # the weights ref goes inside a list so Ray passes the reference, not a copy per task
        results = self._run_shards([[work[j] for j in shard] for shard in shards], [weights], sources, self._version)
        out: dict[str, DiagSums] = {}
        step_compute = []
        for res in results:
            step_compute.append(res["compute_s"])
            for tag, (sums, count) in res["sums"].items():
                part = DiagSums({k: torch.from_numpy(v.astype(np.float64)) for k, v in sums.items()}, count)
                out[tag] = out.get(tag, DiagSums.zero()) + part
                self.stats.bytes_returned += sum(v.nbytes for v in sums.values())
        wall = time.perf_counter() - t0
        self.stats.steps += 1
        self.stats.batches += len(work)
        self.stats.samples += sum(len(w.index) for w in work)
        self.stats.wall_s += wall
        self.stats.worker_compute_s += sum(step_compute)
        self.stats.max_worker_compute_s += max(step_compute, default=0.0)
        self.stats.per_step.append({"wall_s": wall, "max_worker_compute_s": max(step_compute, default=0.0)})
        for tag, _ in requests:
            out.setdefault(tag, DiagSums.zero())
        return out

    def _run_shards(self, shards: list[list[_Work]], weights: list, sources: dict, version: int) -> list[dict]:
        import ray
        from ray.exceptions import RayActorError

        refs = [self.actors[i].compute.remote(weights, version, shard, sources) for i, shard in enumerate(shards)]
        results: list[dict | None] = [None] * len(shards)
        for i, ref in enumerate(refs):
            try:
                results[i] = ray.get(ref)
            except RayActorError as exc:
                # Ray's restart + retry did not recover it: replace the actor, recompute its shard
                print(f"curvature worker {i} failed ({type(exc).__name__}); replacing it", file=sys.stderr)
                ray.kill(self.actors[i], no_restart=True)
                self.actors[i] = self._new_actor()
                self.stats.replacements += 1
                self.worker_info[i] = ray.get(self.actors[i].info.remote())
                self._pids[i] = self.worker_info[i]["pid"]
                results[i] = ray.get(self.actors[i].compute.remote(weights, version, shards[i], sources))
        for i, res in enumerate(results):
            assert res is not None
            if res["pid"] != self._pids[i]:  # Ray restarted the actor (perhaps on another node)
                self.stats.restarts += 1
                self.worker_info[i] = ray.get(self.actors[i].info.remote())
                self._pids[i] = res["pid"]
        return results  # type: ignore[return-value]


def _host_float32(sums: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Sums as float32 numpy arrays on the host (what a worker returns, whatever its device)."""
    return {k: v.to("cpu", torch.float32).numpy() for k, v in sums.items()}
