"""The sweep's Optuna study without Ray, and what a resume may change."""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from fairprune_core.cli import apply_config_file, explicit_dests
from fairprune_core.config import PAPER_SETTINGS, SearchSpace, SweepConfig
from fairprune_core.sweep.state import SweepState
from fairprune_core.sweep.study import OBJECTIVES, SweepStudy

from .conftest import REPO


def _study(tmp_path, **kw) -> SweepStudy:
    opts = dict(space=SearchSpace(), sampler="tpe", seed=0, num_trials=10, log=lambda s: None) | kw
    return SweepStudy(tmp_path, "s", **opts)


def test_paper_settings_first_then_the_sampler_within_the_space(tmp_path):
    study = _study(tmp_path)
    study.enqueue_paper_settings()
    asked = [study.ask() for _ in range(4)]
    assert [p for _, p in asked[:2]] == list(PAPER_SETTINGS)
    for _, p in asked[2:]:
        assert SearchSpace().contains(p)
    assert [n for n, _ in asked] == [0, 1, 2, 3]


def test_told_trials_carry_objectives_constraint_and_run_id(tmp_path):
    study = _study(tmp_path)
    number, _ = study.ask()
    study.tell(number, f1=0.8, eopp1=0.1, floor=0.85, run_id="abc")
    (t,) = study.study.get_trials(states=(TrialState.COMPLETE,))
    assert t.values == [0.8, 0.1]
    assert t.user_attrs["mlflow_run_id"] == "abc" and study.completed_run_ids() == {"abc"}
    constraints = t.constraints.values() if isinstance(t.constraints, dict) else t.constraints
    assert list(constraints) == [pytest.approx(0.05), 0.0]  # > 0: infeasible, as the samplers read it
    assert t.user_attrs["feasible"] is False and t.user_attrs["collapsed"] is False
    assert study.study.metric_names == list(OBJECTIVES)


def test_a_collapsed_trial_is_infeasible_for_the_sampler_and_for_optuna_dashboard(tmp_path):
    from optuna.study._constrained_optimization import _get_feasible_trials
    from optuna_dashboard._serializer import serialize_frozen_trial

    study = _study(tmp_path)
    ok, _ = study.ask()
    study.tell(ok, f1=0.9, eopp1=0.1, floor=0.85)
    flat, _ = study.ask()
    study.tell(flat, f1=0.9, eopp1=0.0, floor=0.85, collapsed=True)  # above the floor, but one class
    trials = study.study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.number for t in _get_feasible_trials(trials)] == [ok]  # what Optuna's samplers use
    # what optuna-dashboard serves for each trial (its own serializer, on the journal's trials)
    served = {t.number: serialize_frozen_trial(0, t, {})["constraints"] for t in trials}
    assert served[ok] == [pytest.approx(-0.05), 0.0] and served[flat] == [pytest.approx(-0.05), 1.0]
    assert [t.user_attrs["feasible"] for t in trials] == [True, False]


def test_interrupted_trials_run_again_and_do_not_use_budget_errors_do(tmp_path):
    study = _study(tmp_path, sampler="random")
    a, _ = study.ask()
    b, _ = study.ask()
    study.tell(a, f1=0.8, eopp1=0.1, floor=0.5)
    study.tell_failed(b, interrupted=False)  # an error: counts
    c, pc = study.ask()
    study.tell_failed(c, interrupted=True)  # stopped before its final report: runs again
    assert study.finished_count() == 2
    d, pd_ = study.ask()
    assert pd_ == pc and d not in (a, b, c)


def test_a_sweep_killed_mid_trial_requeues_it_once_on_reopening(tmp_path):
    study = _study(tmp_path, sampler="random")
    n, params = study.ask()  # RUNNING when the driver dies
    del study
    reopened = _study(tmp_path, sampler="random")
    reopened.requeue_interrupted()
    reopened.requeue_interrupted()  # idempotent
    states = {t.number: t.state for t in reopened.study.get_trials()}
    assert states[n] == TrialState.FAIL
    assert sum(s == TrialState.WAITING for s in states.values()) == 1
    assert reopened.finished_count() == 0
    assert reopened.ask()[1] == params


def test_the_journal_is_what_optuna_dashboard_reads(tmp_path):
    study = _study(tmp_path)
    n, _ = study.ask()
    study.tell(n, f1=0.7, eopp1=0.2, floor=0.5)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
    )
    loaded = optuna.load_study(study_name="s", storage=storage)
    assert loaded.metric_names == list(OBJECTIVES) and len(loaded.trials) == 1


# -- resume: honour what may change, refuse what would change the study -------------------------
@pytest.fixture(scope="module")
def pareto():
    spec = importlib.util.spec_from_file_location("pareto_entry", REPO / "sweeps" / "pareto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _state(pareto, argv: list[str]) -> SweepState:
    parser = pareto._parser()
    args = parser.parse_args(argv)
    cfg = SweepConfig(name="s", num_trials=args.trials, sampler=args.sampler)
    return SweepState(
        "id", "run", "1", "sqlite:///x", 0, 0.5, "fp", cfg.to_dict(), {}, "ckpt", flags=pareto._plain(vars(args))
    )


def _resume(pareto, state: SweepState, argv: list[str], tmp_path=None):
    parser = pareto._parser()
    from_file = apply_config_file(parser, argv)
    args = parser.parse_args(argv)
    return pareto._resumed_config(args, explicit_dests(parser, argv) | from_file, state)


@pytest.mark.parametrize("argv", [["--trials=40"], ["--trials", "40"], ["--tri", "40"]])
def test_resume_honours_the_trial_count_in_any_spelling(pareto, argv):
    state = _state(pareto, ["--trials", "12"])
    assert _resume(pareto, state, ["--resume", *argv]).num_trials == 40


def test_resume_honours_a_config_file_and_what_may_change(pareto, tmp_path):
    state = _state(pareto, ["--trials", "12"])
    (tmp_path / "more.yaml").write_text("trials: 30\nconcurrency: 4\n")
    argv = ["--resume", "--config", str(tmp_path / "more.yaml"), "--workers-per-trial", "2"]
    cfg = _resume(pareto, state, [*argv, "--prepare-suggestions", "never"])
    assert (cfg.num_trials, cfg.concurrency, cfg.workers_per_trial) == (30, 4, 2)
    assert cfg.prepare_suggestions == "never"
    assert cfg.sampler == "gp"  # unchanged


def test_resume_accepts_the_original_command_repeated(pareto):
    argv = ["--trials", "12", "--sampler", "tpe", "--beta-range", "0", "0.5"]
    state = _state(pareto, argv)
    assert _resume(pareto, state, [*argv, "--resume"]).num_trials == 12


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--sampler", "tpe"], "--sampler tpe (the sweep has gp)"),
        (["--beta-range", "0", "0.5"], "--beta-range [0.0, 0.5]"),
        (["--estimator", "mc"], "--estimator mc"),
        (["--width", "0.5"], "--width 0.5"),
        (["--f1-floor", "0.5"], "--f1-floor 0.5"),
    ],
)
def test_resume_refuses_what_would_change_the_study(pareto, argv, words):
    state = _state(pareto, ["--trials", "12"])
    with pytest.raises(ValueError, match="would change the study") as err:
        _resume(pareto, state, ["--resume", *argv])
    assert words in str(err.value)


def test_a_sweep_config_refuses_resumed_changes_to_the_study():
    cfg = SweepConfig(name="s")
    assert cfg.resumed(num_trials=50).num_trials == 50
    with pytest.raises(ValueError, match="cannot change sampler"):
        cfg.resumed(sampler="tpe")


def test_state_round_trips_and_reads_the_older_layout(tmp_path):
    state = SweepState("id", "run", "1", "uri", 1, 0.5, "fp", SweepConfig(name="s").to_dict(), {}, "c")
    state.baselines = {"vanilla": {"val_avg_f1": 0.9}}
    state.save(tmp_path)
    loaded = SweepState.load(tmp_path)
    assert loaded.sweep_config() == state.sweep_config() and loaded.baselines == state.baselines
    assert (loaded.sweep_id, loaded.parent_run_id, loaded.privileged) == ("id", "run", 1)
    old = json.loads((tmp_path / "sweep.json").read_text())
    old.update(old.pop("baselines"), obd={"val_avg_f1": 0.8})
    (tmp_path / "sweep.json").write_text(json.dumps(old))
    assert set(SweepState.load(tmp_path).baselines) == {"vanilla", "obd"}


def test_grid_mode_runs_the_papers_protocol_once_each(tmp_path):
    from fairprune_core.config import PAPER_GRID
    from fairprune_core.sweep.study import grid_size

    study = _study(tmp_path, sampler="grid", num_trials=grid_size())
    study.enqueue_paper_settings()  # no-op: the grid holds them
    points = []
    for _ in range(grid_size()):
        n, p = study.ask()
        study.tell(n, f1=0.5, eopp1=0.1, floor=0.4)
        points.append((p["beta"], p["final_ratio"], p["step_ratio"]))
    expected = {
        (b, f, s) for b in PAPER_GRID["beta"] for f in PAPER_GRID["final_ratio"] for s in PAPER_GRID["step_ratio"]
    }
    assert len(points) == 32 and set(points) == expected
    assert {tuple(v.values()) for v in PAPER_SETTINGS} <= {(b, s, f) for b, f, s in points}


def test_grid_values_outside_the_space_are_refused():
    with pytest.raises(ValueError, match=r"grid values beta=0\.5 lie outside"):
        SweepConfig(name="s", sampler="grid", space=SearchSpace(beta=(0.0, 0.4)))


@pytest.mark.parametrize(
    ("text", "words"), [("trials: [1, 2\n", "not valid YAML"), ("- trials\n- 3\n", "expected a mapping")]
)
def test_a_config_file_that_does_not_parse_is_one_clear_line(pareto, tmp_path, text, words):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(SystemExit, match=words):
        apply_config_file(pareto._parser(), ["--config", str(bad)])


def test_no_trial_runs_more_pruning_steps_than_the_cap_and_the_papers_grid_is_untouched():
    import itertools

    import numpy as np

    from fairprune_core.config import PAPER_GRID
    from fairprune_core.pruning import PruneSchedule

    space = SearchSpace()
    rng = np.random.default_rng(0)
    for step, final in rng.uniform([0.01, 0.05], [0.2, 0.8], size=(500, 2)):
        eff = space.effective_step(step, final)
        steps = len(PruneSchedule(eff, final).targets(1_000_003))
        assert steps <= space.max_steps
        if final / min(step, final) <= space.max_steps:
            assert eff == min(step, final)  # below the cap: the suggested step, exactly
    for step, final in itertools.product(PAPER_GRID["step_ratio"], PAPER_GRID["final_ratio"]):
        assert space.effective_step(step, final) == step
    assert SearchSpace(max_steps=None).effective_step(0.01, 0.8) == 0.01


def test_a_sweep_stored_before_the_step_cap_resumes_without_one():
    d = SweepConfig(name="old").to_dict()
    del d["space"]["max_steps"]
    assert SweepConfig.from_dict(d).space.max_steps is None
    assert SweepConfig.from_dict(SweepConfig(name="new").to_dict()).space.max_steps == 14


# -- suggestions prepared while trials run (sweep.tune.StudySearcher) ---------------------------
def test_the_next_suggestion_is_prepared_in_the_background_and_never_beyond_the_budget(tmp_path):
    from fairprune_core.sweep.tune import StudySearcher

    study = _study(tmp_path)
    searcher = StudySearcher(study, 0.5, budget=3, prepare="always")
    first = searcher.suggest("a")
    assert first["trial_number"] == 0 and searcher._prepared is not None
    number, _ = searcher._prepared.result()  # asked while trial 0 runs: it is in the journal as RUNNING
    assert number == 1
    assert [searcher.suggest(t)["trial_number"] for t in ("b", "c")] == [1, 2]
    assert searcher._prepared is None and searcher.suggest("d") is None  # the budget is spent
    searcher.on_trial_complete("a", {"final": True, "val_avg_f1": 0.8, "val_eopp1": 0.1, "mlflow_run_id": "r"})
    searcher.release()
    assert len(study.study.get_trials(states=(TrialState.COMPLETE,))) == 1
    assert len(study.study.get_trials(states=(TrialState.RUNNING,))) == 2  # b and c, in flight


def test_a_prepared_suggestion_never_handed_out_runs_on_resume(tmp_path):
    from fairprune_core.sweep.tune import StudySearcher

    study = _study(tmp_path)
    searcher = StudySearcher(study, 0.5, budget=5, prepare="always")
    handed = searcher.suggest("a")
    prepared = searcher._prepared.result()[1]
    searcher.on_trial_complete("a", {"final": True, "val_avg_f1": 0.8, "val_eopp1": 0.1})
    searcher.release()  # the sweep stopped before a slot took the prepared suggestion
    assert study.finished_count() == 1  # the prepared trial used no budget
    again = _study(tmp_path)
    number, params = again.ask()
    assert params == prepared and params != {k: handed[k] for k in params}
    assert again.study.trials[number].user_attrs["requeued_from"] == 1


def test_the_gp_sampler_does_not_prepare_the_suggestion_it_just_handed_out(tmp_path):
    """The prepared suggestion is asked while the previous one is in flight; Optuna's GP sampler
    treats running trials as pending (batch acquisition), so it proposes another point."""
    from fairprune_core.sweep.tune import StudySearcher

    study = _study(tmp_path, sampler="gp", num_trials=12)  # 4 start-up trials
    for _ in range(4):
        n, p = study.ask()
        study.tell(n, f1=0.5 + p["final_ratio"] / 2, eopp1=0.1 + p["beta"] / 10, floor=0.0)
    searcher = StudySearcher(study, 0.0, budget=2, prepare="always")
    handed = searcher.suggest("a")
    _, prepared = searcher._prepared.result()
    assert prepared != {k: handed[k] for k in prepared}
    searcher.release()


def test_auto_prepares_only_when_the_sampler_costs_more_than_a_sliver_of_a_trial(tmp_path):
    from fairprune_core.sweep.tune import PREPARE_ABOVE, StudySearcher

    final = {"final": True, "val_avg_f1": 0.8, "val_eopp1": 0.1}
    for trial_s, prepared in ((1e6, False), (1e-9, True)):  # trials far longer / shorter than a suggestion
        (tmp_path / str(prepared)).mkdir()
        study = _study(tmp_path / str(prepared))
        searcher = StudySearcher(study, 0.5, budget=4)  # auto
        searcher.suggest("a")
        assert searcher._prepared is None  # no finished trial to compare the sampler's cost with yet
        searcher.on_trial_complete("a", {**final, "time_total_s": trial_s})
        searcher.suggest("b")
        assert (searcher._prepared is not None) is prepared, (trial_s, PREPARE_ABOVE)
        searcher.release()
    (tmp_path / "never").mkdir()
    never = StudySearcher(_study(tmp_path / "never"), 0.5, budget=4, prepare="never")
    never.suggest("a")
    never.on_trial_complete("a", {**final, "time_total_s": 1e-9})
    never.suggest("b")
    assert never._prepared is None


def test_prepare_suggestions_is_checked_and_may_change_on_resume():
    from fairprune_core.config import SweepConfig

    with pytest.raises(ValueError, match="--prepare-suggestions must be one of auto, always, never"):
        SweepConfig(name="x", prepare_suggestions="sometimes")
    assert SweepConfig(name="x").resumed(prepare_suggestions="never").prepare_suggestions == "never"
    old = SweepConfig(name="x").to_dict()
    del old["prepare_suggestions"]  # a sweep stored before the setting existed
    assert SweepConfig.from_dict(old).prepare_suggestions == "auto"


def test_safetensors_only_may_change_on_resume_and_older_sweeps_pickle_too(pareto):
    from fairprune_core.config import SweepConfig

    assert SweepConfig(name="x").resumed(safetensors_only=True).safetensors_only is True
    old = SweepConfig(name="x").to_dict()
    del old["safetensors_only"]  # a sweep stored before the setting existed
    assert SweepConfig.from_dict(old).safetensors_only is False
    assert "safetensors_only" in pareto.RESUMABLE.values()
    assert "allow_chance_model" in pareto.RESUMABLE.values()  # checked when a sweep starts only


def test_the_gp_samplers_per_suggestion_warning_is_said_once(tmp_path):
    import logging

    from optuna._gp import optim_mixed

    from fairprune_core.sweep.study import _GP_LOGGER

    assert optim_mixed._logger.name == _GP_LOGGER  # the logger Optuna's GP warns on
    SweepStudy(tmp_path, "s", space=SearchSpace(), sampler="gp", seed=0, num_trials=3, log=lambda s: None)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    optim_mixed._logger.addHandler(handler)
    try:
        for _ in range(3):
            optim_mixed._logger.warning("Study already converged, so the number of local search is reduced.")
        optim_mixed._logger.warning("another message")
    finally:
        optim_mixed._logger.removeHandler(handler)
    assert seen == ["Study already converged, so the number of local search is reduced.", "another message"]
    with warnings.catch_warnings(record=True) as caught:  # its 0/0 in numpy, silenced in Optuna's module only
        warnings.simplefilter("default")
        SweepStudy(tmp_path, "s", space=SearchSpace(), sampler="gp", seed=0, num_trials=3, log=lambda s: None)
        exec("np.zeros(2) / np.zeros(2)", {"__name__": optim_mixed.__name__, "np": np})  # as in its code
        np.zeros(2) / np.zeros(2)  # elsewhere: still warned
    assert [str(w.message) for w in caught] == ["invalid value encountered in divide"], caught
