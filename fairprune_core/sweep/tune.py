"""Ray Tune wiring of the sweep: a searcher over the study, the trainable, the live table.

Everything Ray Tune lives here. The searcher is a plain :class:`ray.tune.search.Searcher`
around :class:`~fairprune_core.sweep.study.SweepStudy` (Optuna's ask/tell), so no private
attribute of Tune's own Optuna integration is needed. Module-level classes: Tune pickles its
searcher and callbacks.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback
from ray.tune.search import Searcher

from ..config import SweepConfig
from .study import SweepStudy
from .table import PROGRESS_HEADER, progress_row, trial_status
from .trial import TrialContext, TrialSettings, run_trial

__all__ = ["ProgressTable", "StudySearcher", "run_trials"]


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
    """

    def __init__(self, study: SweepStudy, floor: float, *, budget: int, prepare: str = "auto") -> None:
        super().__init__(metric="val_avg_f1", mode="max")  # Tune's bookkeeping; both objectives go to the study
        self.study = study
        self.floor = floor
        self.budget = budget
        self.prepare = prepare
        self.handed = 0
        self._numbers: dict[str, int] = {}
        self._trial_seconds: list[float] = []
        self._prepared: Future | None = None
        self._pool: ThreadPoolExecutor | None = None

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.handed >= self.budget:
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

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its searcher: not the thread or its future
        return {k: v for k, v in self.__dict__.items() if k not in ("_prepared", "_pool")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _prepared=None, _pool=None)

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
    """A live table of the sweep: one row per finished (or failed) trial."""

    def __init__(self, total: int, already: int, log: Callable[[str], None] = print, *, retries: int = 0) -> None:
        self.retries = retries
        self.total = total
        self.done = already
        self.log = log
        self.started = time.monotonic()
        log(PROGRESS_HEADER)
        log("-" * (len(PROGRESS_HEADER) + 24))

    def _row(self, trial: Any, status: str) -> None:
        self.done += 1
        secs = time.monotonic() - self.started
        self.log(progress_row(trial.config, trial.last_result or {}, status, self.done, self.total, secs))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._row(trial, trial_status(trial.last_result or {}))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._row(trial, f"ERROR after {self.retries} retries (see the Tune log)")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = (trial.config or {}).get("trial_number", "?")
        self.log(
            f"  trial {number} stopped before it finished ({_failure(trial)}); running it again "
            f"(retry {trial.run_metadata.num_failures} of {self.retries})"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "log"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.log = print


def _failure(trial: Any) -> str:
    """The exception that ended a trial attempt (its last ``SomeError: message`` line), from Tune's
    error file; the traceback stays in that file (``error.txt`` in the trial's Tune folder)."""
    path = getattr(trial, "error_file", None) or ""
    try:
        with open(path) as f:
            lines = [line.strip() for line in f]
    except OSError:
        return "its worker failed"
    from ..tracking.mlflow_store import KNOWN_STORE_FAILURES

    text = " ".join(lines).lower()
    known = [reason for reason in KNOWN_STORE_FAILURES if reason.lower() in text]
    if known:
        return f"the tracking store failed: {known[0]}"
    lines = [x for x in lines if x and not x.startswith("Failure #")]
    raised = [x for x in lines if re.match(r"^[\w.]+(Error|Exception)\b", x)]
    line = raised[-1] if raised else (lines[0] if lines else "its worker failed")
    return line if len(line) <= 160 else line[:157] + "..."


TRACKING_WAIT_S = float(os.environ.get("FAIRPRUNE_TRACKING_WAIT_S", 600))


def _wait_for_tracking(uri: str) -> None:
    """A tracking server that is away (restarting): wait for it, up to ``TRACKING_WAIT_S``, so that
    a trial run again after an outage does not fail at once again."""
    from ..tracking import TrackingError, check_tracking_uri

    deadline = time.monotonic() + TRACKING_WAIT_S
    while True:
        try:
            check_tracking_uri(uri, multi_node=False, timeout_s=5.0)
            return
        except TrackingError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def sweep_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune trainable: one trial, logged to MLflow as a child of the sweep's parent run."""
    entered = time.time()  # when the trial's code starts: its process start-up ends here
    warm = sys.modules.get("fairprune_core.sweep.warm")  # imported ahead by Ray's idle worker, if it was
    import torch

    from ..curvature.distributed import CurvaturePool
    from ..models import ModelConfig
    from ..tracking import MlflowTracker

    torch.set_num_threads(max(1, int(ctx.cpus_per_trial)))
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
    _wait_for_tracking(ctx.tracking_uri)
    # an earlier attempt of this trial (its worker died, its store failed) left its run open: closed
    tracker.close_attempts(ctx.sweep_id, settings.number)
    pool = None
    # the run's source in MLflow's runs table: the sweep, not Ray's worker script
    tags: dict[str, str] = {
        "mlflow.source.name": "sweeps/pareto.py (Ray Tune trial)",
        "trial_process": f"{socket.gethostname()}:{os.getpid()}",  # one warm worker runs many trials
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
            worker=(getattr(warm, "STARTED_UNIX", None), getattr(warm, "PRELOADED_UNIX", None)),
        )
    finally:
        if pool is not None:
            pool.shutdown()


def _without_tune_runtime_env() -> None:
    """Trial actors without Ray Tune's default runtime environment (``PL_DISABLE_FORK=1``, for
    PyTorch Lightning, which the sweep does not use): Ray hands an actor with a runtime environment
    only a fresh worker process, never one of the idle workers it started with the cluster, which
    a private local Ray has import the trial's modules ahead (:mod:`.warm`). Ray Tune has no
    public setting for it; where its private table is gone, trials start in fresh workers, as before."""
    from ray.tune.execution import class_cache

    getattr(class_cache, "DEFAULT_ENV_VARS", {}).pop("PL_DISABLE_FORK", None)


def _resources(cfg: SweepConfig) -> Any:
    from ..curvature.distributed import worker_bundles

    own = {"CPU": cfg.cpus_per_trial, **({"GPU": cfg.gpus_per_trial} if cfg.gpus_per_trial else {})}
    if not cfg.workers_per_trial:
        return tune.PlacementGroupFactory([own])
    bundles = worker_bundles(
        cfg.workers_per_trial, cpus_per_worker=cfg.cpus_per_worker, gpus_per_worker=cfg.gpus_per_worker
    )
    return tune.PlacementGroupFactory([own, *bundles], strategy="SPREAD")


def run_trials(
    cfg: SweepConfig,
    ctx: TrialContext,
    study: SweepStudy,
    *,
    already: int,
    invocation: int,
    log: Callable[[str], None] = print,
) -> bool:
    """Run the remaining trials of the study on Ray Tune; True when the run was interrupted."""
    remaining = cfg.num_trials - already
    # per-step progress reports deliberately lack the objectives (see trial.py)
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # no TensorBoard files (nor its hint) and no JSON copies of every result: MLflow and the study
    # hold the results. One CSV logger stays (below): Tune's result grid at the end of ``fit``
    # reads each trial's progress file and warns once per trial when there is none.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # the console is the sweep's own table: with Tune's older reporter, verbose=0 prints nothing
    # (the newer one still prints a configuration box and the path of files the sweep does not read)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    _without_tune_runtime_env()
    searcher = StudySearcher(study, ctx.f1_floor, budget=remaining, prepare=cfg.prepare_suggestions)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(sweep_trial, ctx=ctx), _resources(cfg)),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=remaining,
            max_concurrent_trials=cfg.concurrency,
            # warm trial workers: one actor per slot runs trial after trial (imports, the shipped
            # context, MLflow's store connection and the model's first passes are paid once)
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=str((cfg.directory / "tune").resolve()),
            name=f"run-{invocation}",
            verbose=0,
            callbacks=[ProgressTable(cfg.num_trials, already, log, retries=cfg.trial_retries), CSVLoggerCallback()],
            # a trial whose worker died or whose tracking store failed runs again, from scratch
            failure_config=tune.FailureConfig(max_failures=cfg.trial_retries),
        ),
    )
    # a failed trial attempt is one line of the progress table (its traceback stays in Tune's error
    # file), not Tune's traceback on the console; trials that failed for good are the sweep's own
    # closing note (runner.py), not Tune's "Trials did not complete" and "Failed to fetch metrics"
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        tuner.fit()  # a first Ctrl-C makes Tune stop gracefully and return
    except KeyboardInterrupt:
        return True
    finally:
        searcher.release()
    # the study, not Tune, says what finished: Tune counts the trials a Ctrl-C stopped as terminated
    return study.finished_count() < cfg.num_trials
