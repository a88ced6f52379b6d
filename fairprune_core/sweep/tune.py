"""Ray Tune wiring of the sweep: a searcher over the study, the trainable, the live table.

Everything Ray Tune lives here. The searcher is a plain :class:`ray.tune.search.Searcher`
around :class:`~fairprune_core.sweep.study.SweepStudy` (Optuna's ask/tell), so no private
attribute of Tune's own Optuna integration is needed. Module-level classes: Tune pickles its
searcher and callbacks.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray
from ray import tune
from ray.tune import Callback, Stopper
from ray.tune.logger import CSVLoggerCallback
from ray.tune.search import Searcher

from ..config import SweepConfig
from .study import SweepStudy
from .table import PROGRESS_HEADER, progress_row, trial_status
from .trial import TrialContext, TrialSettings, run_trial

__all__ = ["ProgressTable", "StudySearcher", "TrialRun", "TrialStart", "trial_run"]


WARMUP = "warmup"  # the config key of a warm-up trial (no study trial: it starts a slot's worker)
PREPARE_ABOVE = 0.02  # "auto": prepare when the last suggestion took more than this share of a trial


class StudySearcher(Searcher):
    """Tune's suggestions come from the study; finished trials are told back to it.

    A prepared suggestion is asked for in a background thread as soon as one is handed out, so
    that a freed trial slot starts its next trial at once instead of waiting for the sampler
    (Optuna's GP sampler takes 0.1-1 s per suggestion). It sees the trials in flight as running
    (the GP sampler's batch acquisition accounts for them) but not the result of the trial whose
    slot it will fill: one result less than asking at that moment
    (``benchmarks/sampler_hypervolume.py --lags 1 2``: the same hypervolume within its noise).
    ``prepare``: "always", "never", or "auto": when the last suggestion took more than
    ``PREPARE_ABOVE`` of the finished trials' mean time (short trials, a costly sampler). At most
    ``budget`` suggestions are asked for; one prepared but never handed out (the sweep was
    stopped) is released as interrupted by :meth:`release`, so it runs on resume.

    ``warmups``: that many warm-up trials come first (no study trial: each starts a trial slot's
    worker while the driver's preamble runs); study suggestions wait until :attr:`ready` is set
    (the trials' context exists), and none come once :attr:`cancelled` (the preamble failed).
    """

    def __init__(
        self, study: SweepStudy, floor: float, *, budget: int, prepare: str = "auto", warmups: int = 0
    ) -> None:
        super().__init__(metric="val_avg_f1", mode="max")  # Tune's bookkeeping; both objectives go to the study
        self.study = study
        self.floor = floor
        self.budget = budget
        self.prepare = prepare
        self.warmups = warmups
        self.ready = threading.Event()
        if not warmups:
            self.ready.set()
        self.cancelled = False
        self.handed = 0
        self._numbers: dict[str, int] = {}
        self._trial_seconds: list[float] = []
        self._prepared: Future | None = None
        self._pool: ThreadPoolExecutor | None = None

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.warmups:
            self.warmups -= 1
            return {WARMUP: True}
        if self.cancelled:
            return Searcher.FINISHED
        if self.handed >= self.budget or not self.ready.is_set():
            return None
        t0 = time.perf_counter()
        was_prepared = self._prepared is not None
        number, params = self._prepared.result() if was_prepared else self.study.ask()
        self._prepared = None
        self.study.mark_handed(number, waited_s=time.perf_counter() - t0, prepared=was_prepared)
        self.handed += 1
        self._numbers[trial_id] = number
        if self.handed < self.budget and self._should_prepare(self.study.ask_seconds(number)):
            self._pool = self._pool or ThreadPoolExecutor(max_workers=1, thread_name_prefix="suggest")
            self._prepared = self._pool.submit(self.study.ask)
        return {**params, "trial_number": number}

    def _should_prepare(self, last_ask_s: float) -> bool:
        if self.prepare != "auto":
            return self.prepare == "always"
        if not self._trial_seconds:
            return False  # nothing to compare with yet (start-up suggestions are cheap)
        mean = sum(self._trial_seconds) / len(self._trial_seconds)
        return last_ask_s > PREPARE_ABOVE * mean

    def release(self) -> None:
        """A suggestion prepared but not handed out goes back to the study (run on resume)."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            number, _ = prepared.result()
            self.study.tell_failed(number, interrupted=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its searcher: not the thread, its future or events
        return {k: v for k, v in self.__dict__.items() if k not in ("_prepared", "_pool", "ready")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _prepared=None, _pool=None, ready=threading.Event())

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self._numbers.pop(trial_id, None)
        if number is None:
            return
        if result and "time_total_s" in result:  # the trial's own time (Tune's), for the "auto" rule
            self._trial_seconds.append(float(result["time_total_s"]))
        if result and result.get("final") and not error:
            self.study.tell(
                number,
                f1=float(result["val_avg_f1"]),
                eopp1=float(result["val_eopp1"]),
                floor=self.floor,
                run_id=str(result.get("mlflow_run_id", "")),
                feasible=bool(result.get("feasible", False)),
                collapsed=bool(result.get("collapsed", False)),
            )
        else:  # an error counts against the budget; a trial stopped before its final report runs again
            self.study.tell_failed(number, interrupted=not error)

    def save(self, checkpoint_path: str) -> None:
        # the study keeps its own state in its journal; this only records the trials in flight
        with open(checkpoint_path, "w") as f:
            json.dump(self._numbers, f)

    def restore(self, checkpoint_path: str) -> None:
        pass  # a resumed sweep starts a new Tune run over the same study


class ProgressTable(Callback):
    """A live table of the sweep: one row per finished (or failed) trial; its header and clock
    start with the first study trial (warm-up trials have no row)."""

    def __init__(self, total: int, already: int, log: Callable[[str], None] = print) -> None:
        self.total = total
        self.done = already
        self.log = log
        self.started: float | None = None

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.started is None and not trial.config.get(WARMUP):
            self.started = time.monotonic()
            self.log(PROGRESS_HEADER)
            self.log("-" * (len(PROGRESS_HEADER) + 24))

    def _row(self, trial: Any, status: str) -> None:
        if trial.config.get(WARMUP):
            return
        self.done += 1
        secs = time.monotonic() - (self.started or time.monotonic())
        self.log(progress_row(trial.config, trial.last_result or {}, status, self.done, self.total, secs))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._row(trial, trial_status(trial.last_result or {}))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.config.get(WARMUP):  # its slot's first trial starts a worker of its own
            self.log(f"a trial worker's warm-up failed (see the Tune log of {trial.trial_id})")
        self._row(trial, "ERROR (see the Tune log)")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "log"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.log = print


class ContextBox:
    """Where the driver puts the trials' context once its preamble is done (as an object ref);
    warm trial workers wait for it. ``None``: the sweep stopped before its trials began."""

    def __init__(self) -> None:
        self._ready = asyncio.Event()
        self._refs: list[Any] | None = None

    async def put(self, refs: list[Any] | None) -> None:
        self._refs = refs
        self._ready.set()

    async def get(self) -> list[Any] | None:
        await self._ready.wait()
        return self._refs


@dataclass(frozen=True)
class TrialStart:
    """What a trial worker gets with the trainable, before the driver's context exists."""

    box: Any  # a ContextBox actor
    key: str  # the sweep invocation (a worker keeps one context)
    tracking_uri: str
    experiment_id: str
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0


_CONTEXT: dict[str, TrialContext] = {}  # per worker process: the context of the invocation it serves
_WARMED: list[str] = []  # the invocations this worker ran a warm-up for


def _context(start: TrialStart) -> TrialContext | None:
    """The trials' context, fetched once per worker (waits until the driver has put it)."""
    if start.key not in _CONTEXT:
        refs = ray.get(start.box.get.remote())
        if refs is None:
            return None
        _CONTEXT.clear()
        _CONTEXT[start.key] = ray.get(refs[0])
    return _CONTEXT[start.key]


def _warm_up(start: TrialStart) -> None:
    """A warm-up trial: the worker's imports (done by now), MLflow's store and the GPU's context,
    then wait for the trials' context, so that this slot's first trial starts warm."""
    import torch

    from ..tracking import MlflowTracker

    MlflowTracker(start.tracking_uri, start.experiment_id).open_store()
    if start.gpus_per_trial > 0 and torch.cuda.is_available():
        torch.zeros(1, device="cuda")  # CUDA's context, created once per process
    _context(start)
    _WARMED.append(start.key)
    tune.report({WARMUP: True})  # a result, so that Tune's result files are not empty


def sweep_trial(config: dict[str, Any], start: TrialStart) -> None:
    """The Tune trainable: one trial, logged to MLflow as a child of the sweep's parent run (or
    a warm-up, see :class:`TrialRun`)."""
    entered = time.time()  # when the trial's code starts: its process start-up ends here
    import torch

    torch.set_num_threads(max(1, int(start.cpus_per_trial)))
    if config.get(WARMUP):
        _warm_up(start)
        return
    ctx = _context(start)
    if ctx is None:
        return  # not reached: study trials start after the context is put
    _run_study_trial(config, ctx, entered, warm=start.key in _WARMED)


def _run_study_trial(config: dict[str, Any], ctx: TrialContext, entered: float, *, warm: bool) -> None:
    import torch

    from ..distributed import CurvaturePool
    from ..model import ModelConfig
    from ..tracking import MlflowTracker

    settings = TrialSettings(
        int(config.get("trial_number", -1)),
        float(config["beta"]),
        float(config["step_ratio"]),
        float(config["final_ratio"]),
        ctx.max_steps,
    )
    tracker = MlflowTracker(
        ctx.tracking_uri, ctx.experiment_id, parent_run_id=ctx.parent_run_id, pickle_models=ctx.pickle_models
    )
    pool = None
    # the run's source in MLflow's runs table: the sweep, not Ray's worker script
    tags: dict[str, str] = {
        "mlflow.source.name": "sweeps/pareto.py (Ray Tune trial)",
        "trial_process": f"{socket.gethostname()}:{os.getpid()}",  # one warm worker runs many trials
        "trial_worker_warmed": str(warm).lower(),  # its worker started during the driver's preamble
    }
    if ctx.workers:
        pool = CurvaturePool(
            ModelConfig(**ctx.problem.model_config),
            ctx.problem.curvature,
            num_workers=ctx.workers,
            cpus_per_worker=ctx.cpus_per_worker,
            gpus_per_worker=ctx.gpus_per_worker,
        )
        # where this trial's curvature workers run (one per bundle of its placement group)
        tags["curvature_nodes"] = ",".join(sorted(i["node_id"] for i in pool.worker_info))
    try:
        # a trial given GPUs sees exactly those (Ray sets CUDA_VISIBLE_DEVICES); otherwise the CPU
        device = "cuda" if ctx.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
        run_trial(
            settings,
            ctx,
            tracker=tracker,
            report=tune.report,
            curvature=pool,
            tags=tags,
            device=device,
            entered=entered,
        )
    finally:
        if pool is not None:
            pool.shutdown()


def _resources(cfg: SweepConfig) -> Any:
    from ..distributed import worker_bundles

    own = {"CPU": cfg.cpus_per_trial, **({"GPU": cfg.gpus_per_trial} if cfg.gpus_per_trial else {})}
    if not cfg.workers_per_trial:
        return tune.PlacementGroupFactory([own])
    bundles = worker_bundles(
        cfg.workers_per_trial, cpus_per_worker=cfg.cpus_per_worker, gpus_per_worker=cfg.gpus_per_worker
    )
    return tune.PlacementGroupFactory([own, *bundles], strategy="SPREAD")


_STOP: dict[str, threading.Event] = {}  # a sweep invocation's stop request (Tune may copy its stopper)


class _StopRequest(Stopper):
    """Stops the whole Tune run once the driver asks (Ctrl-C while Tune runs in its thread)."""

    def __init__(self, key: str) -> None:
        self.key = key
        _STOP[key] = threading.Event()

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return _STOP[self.key].is_set()


class TrialRun:
    """The remaining trials of a sweep invocation on Ray Tune, started BEFORE the driver's
    preamble (baselines, the shared step-0 curvature): one warm-up trial per slot starts its
    worker meanwhile (a process, torch, Ray Tune, MLflow and its store: ~7 s on 2 cores), and
    the study's trials begin on those workers as soon as :meth:`begin` hands over the context.

    Tune runs in a thread of the driver; the preamble stays in the main thread, so a Ctrl-C
    there stops the sweep at once, as before (:meth:`__exit__` releases the warm-ups). A Ctrl-C
    while the trials run stops Tune gracefully (a second one ends the process). Use as a
    context manager; :meth:`begin` returns True when the run was interrupted.
    """

    def __init__(
        self,
        cfg: SweepConfig,
        start: TrialStart,
        study: SweepStudy,
        floor: float,
        *,
        already: int,
        invocation: int,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cfg = cfg
        self.study = study
        self.start = start
        remaining = cfg.num_trials - already
        self.searcher = StudySearcher(
            study, floor, budget=remaining, prepare=cfg.prepare_suggestions, warmups=cfg.concurrency
        )
        self._stop = _StopRequest(start.key)
        self.tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(sweep_trial, start=start), _resources(cfg)),
            tune_config=tune.TuneConfig(
                search_alg=self.searcher,
                num_samples=remaining + cfg.concurrency,
                max_concurrent_trials=cfg.concurrency,
                # warm trial workers: one actor per slot runs its warm-up, then trial after trial
                # (imports, the context, MLflow's store and the model's first passes paid once)
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                storage_path=str((cfg.directory / "tune").resolve()),
                name=f"run-{invocation}",
                verbose=0,
                stop=self._stop,
                callbacks=[ProgressTable(cfg.num_trials, already, log), CSVLoggerCallback()],
            ),
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fit, name="ray-tune", daemon=True)
        self._begun = False

    def _fit(self) -> None:
        try:
            self.tuner.fit()
        except BaseException as e:  # handed to the main thread by _join
            self._error = e

    def __enter__(self) -> TrialRun:
        self._thread.start()
        return self

    def begin(self, ctx: TrialContext) -> bool:
        """Hand the context to the trials and wait for them; True when interrupted (Ctrl-C)."""
        self._begun = True
        self.searcher.ready.set()  # before the warm-ups end: a slot never waits with nothing to run
        self.start.box.put.remote([ray.put(ctx)])
        try:
            self._join()
        except KeyboardInterrupt:
            _STOP[self.start.key].set()  # Tune stops its trials at its next step
            self._join()
            return True
        # the study, not Tune, says what finished: Tune counts the trials a stop ended as terminated
        return self.study.finished_count() < self.cfg.num_trials

    def _join(self) -> None:
        while self._thread.is_alive():
            self._thread.join(0.5)  # a timeout, so that a Ctrl-C reaches the main thread
        if self._error is not None:
            raise self._error

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> None:
        try:
            if not self._begun:  # the preamble failed or was interrupted: no trial runs
                self.searcher.cancelled = True
                self.start.box.put.remote(None)  # the warm-ups end (and report), Tune finishes
                self._thread.join(30)
                _STOP[self.start.key].set()  # a warm-up still starting is stopped
                self._thread.join(30)
        finally:
            self.searcher.release()
            ray.kill(self.start.box)
            _STOP.pop(self.start.key, None)


def trial_run(
    cfg: SweepConfig,
    study: SweepStudy,
    floor: float,
    *,
    tracking_uri: str,
    experiment_id: str,
    already: int,
    invocation: int,
    log: Callable[[str], None] = print,
) -> TrialRun:
    """A :class:`TrialRun` for the sweep's remaining trials, with its context box."""
    # per-step progress reports deliberately lack the objectives (see trial.py)
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # no TensorBoard files (nor its hint) and no JSON copies of every result: MLflow and the study
    # hold the results. One CSV logger stays (below): Tune's result grid at the end of ``fit``
    # reads each trial's progress file and warns once per trial when there is none.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # the console is the sweep's own table: with Tune's older reporter, verbose=0 prints nothing
    # (the newer one still prints a configuration box and the path of files the sweep does not read)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    box = ray.remote(num_cpus=0)(ContextBox).remote()
    start = TrialStart(
        box,
        f"{cfg.name}/{invocation}/{time.time_ns()}",
        tracking_uri,
        experiment_id,
        cpus_per_trial=cfg.cpus_per_trial,
        gpus_per_trial=cfg.gpus_per_trial,
    )
    return TrialRun(cfg, start, study, floor, already=already, invocation=invocation, log=log)
