"""The experiment engine: every registered method through one suite, the runner, the trial body
(no Ray, no MLflow), and the curvature device rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from fairprune_core.config import PruneConfig
from fairprune_core.evaluation import predict
from fairprune_core.experiment import Experiment, build_problem
from fairprune_core.masks import prunable_parameters
from fairprune_core.methods import METHOD_NAMES, make_method, method_class
from fairprune_core.methods.base import Method
from fairprune_core.models import ModelConfig, build_model
from fairprune_core.pruning import LocalCurvature
from fairprune_core.sweep.front import is_feasible
from fairprune_core.sweep.trial import TrialContext, TrialSettings, run_trial

# small settings for each method, so the suite runs in seconds
SMALL = {
    "vanilla": {},
    "obd": {"step_ratio": 0.05, "final_ratio": 0.1},
    "fairprune": {"step_ratio": 0.05, "final_ratio": 0.1},
    "advconf": {},
    "advrev": {},
    "domainindep": {},
}


@pytest.fixture(scope="module")
def training(synthetic, tmp_path_factory):
    """One epoch of a tiny model: how training-time methods train theirs in the suite."""
    from fairprune_core.methods.base import TrainingSetup
    from fairprune_core.training import TrainConfig

    config = ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=1 / 16)
    train = TrainConfig(epochs=1, batch_size=64, lr=1e-3, lr_milestones=(), augment="none")
    return TrainingSetup(synthetic, config, train, runs_dir=tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def checkpoint(synthetic, tmp_path_factory):
    """A tiny VGG trained briefly (it must not predict one class: that model would be collapsed)."""
    from fairprune_core.checkpoint import load_checkpoint
    from fairprune_core.training import TrainConfig, pretrain

    config = ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=1 / 16)
    train = TrainConfig(epochs=10, batch_size=32, lr=1e-3, lr_milestones=(), augment="none")
    res = pretrain(synthetic, config, train, tmp_path_factory.mktemp("vanilla"), log=lambda s: None)
    return load_checkpoint(res.best_path, dataset=synthetic)


@pytest.fixture(scope="module")
def problem(synthetic, checkpoint):
    return build_problem(synthetic, checkpoint, PruneConfig(batch_size=8, num_batches=2), log=lambda s: None)


def test_every_registered_method_is_in_the_small_settings():
    assert set(METHOD_NAMES) == set(SMALL), "add the new method's small settings to SMALL"


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_runs_through_the_engine(name, problem, training):
    method = make_method(name, **SMALL[name])
    assert isinstance(method, Method) and method.name == name
    experiment = Experiment(problem, n_boot=50, log=None, training=training)
    before = {k: v.clone() for k, v in experiment.model.state_dict().items()}
    record = experiment.run_method(method)
    # the pre-trained model is never modified
    assert all(torch.equal(before[k], v) for k, v in experiment.model.state_dict().items())
    assert record.output.model is not experiment.model
    masks = record.output.masks
    if masks is not None:
        assert set(masks) == set(prunable_parameters(record.output.model))
        for n, m in masks.items():
            assert m.dtype == torch.bool and (record.output.model.get_parameter(n)[~m] == 0).all()
        assert record.achieved_ratio == pytest.approx(SMALL[name]["final_ratio"], abs=1e-4)
        assert record.output.history[0]["step"] == 0 and len(record.output.history) >= 2
    # the record's metrics are those of the returned model, checked against scikit-learn
    for split in ("val", "test"):
        data = problem.split(split)
        pred = predict(record.output.model, data.images).argmax(1)
        np.testing.assert_array_equal(record.metrics[split]["predictions"], pred)
        for g in (0, 1):
            sel = data.groups == g
            labels = np.unique(data.labels[sel])
            ref = f1_score(data.labels[sel], pred[sel], labels=labels, average="macro", zero_division=0)
            assert record.metrics[split]["groups"][g]["f1"] == pytest.approx(ref)
        assert (name == "vanilla") == (split not in record.vs_vanilla)
    flat = record.flat()
    assert {"val_avg_f1", "val_eopp1", "test_eopp1", "val_eopp1_ci_low", "test_avg_f1_ci_high"} <= set(flat)


def test_registry_errors_name_the_choices():
    with pytest.raises(ValueError, match="unknown method 'kfac'; choose one of vanilla, obd, fairprune"):
        method_class("kfac")
    with pytest.raises(ValueError, match="no hyper-parameter gamma; it takes beta, final_ratio"):
        make_method("fairprune", gamma=1.0)
    with pytest.raises(ValueError, match="final_ratio"):
        make_method("obd", step_ratio=0.5, final_ratio=0.2)


def test_vanilla_equals_the_pre_trained_model_and_pruning_is_paired_against_it(problem):
    experiment = Experiment(problem, n_boot=50, log=None)
    vanilla, obd = experiment.run([make_method("vanilla"), make_method("obd", **SMALL["obd"])])
    np.testing.assert_array_equal(vanilla.metrics["val"]["predictions"], experiment.vanilla_predictions("val"))
    d = obd.vs_vanilla["val"]["eopp1"]
    assert d["delta"] == pytest.approx(obd.metrics["val"]["eopp1"] - vanilla.metrics["val"]["eopp1"])


# -- curvature follows the model's device -------------------------------------------------------
def test_local_curvature_follows_the_model_device_unless_told(problem):
    model = problem.build_model()
    assert LocalCurvature(problem.curvature).engine_device(model) == torch.device("cpu")
    meta = build_model(ModelConfig(**problem.model_config)).to("meta")
    assert LocalCurvature(problem.curvature).engine_device(meta) == torch.device("meta")
    assert LocalCurvature(problem.curvature, device="cpu").engine_device(meta) == torch.device("cpu")
    assert Experiment(problem, log=None).curvature.device is None  # the runner never pins the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_curvature_of_a_gpu_model_is_computed_on_the_gpu(problem):
    model = problem.build_model().cuda()
    backend = LocalCurvature(problem.curvature)
    backend.compute(model, [("all", problem.data.all)], 0)
    assert next(backend._engine.model.parameters()).is_cuda


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_pruning_run_on_the_gpu_selects_what_the_cpu_run_selects(problem):
    method = make_method("fairprune", beta=0.3, step_ratio=0.05, final_ratio=0.1)
    on = {d: Experiment(problem, log=None, device=d).run_method(method) for d in ("cpu", "cuda")}
    masks = {d: rec.output.masks for d, rec in on.items()}
    agree = np.mean([(masks["cpu"][n] == masks["cuda"][n]).float().mean().item() for n in masks["cpu"]])
    assert agree > 0.999  # float32 sums on two devices: only ties at the threshold may differ
    assert all(not m.is_cuda for m in masks["cuda"].values())  # masks come back to the CPU
    assert abs(on["cpu"].metrics["val"]["avg"]["f1"] - on["cuda"].metrics["val"]["avg"]["f1"]) < 0.01


def test_sweep_trials_ask_ray_for_their_gpus():
    from fairprune_core.config import SweepConfig
    from fairprune_core.sweep.tune import _resources

    assert _resources(SweepConfig(name="x", gpus_per_trial=0.25)).bundles == [{"CPU": 1, "GPU": 0.25}]
    assert _resources(SweepConfig(name="x")).bundles == [{"CPU": 1}]
    with pytest.raises(ValueError, match=r"gpus_per_trial \(--gpus-per-trial\) must be >= 0"):
        SweepConfig(name="x", gpus_per_trial=-1)


# -- the sweep's trial body, without Ray or MLflow ----------------------------------------------
@pytest.fixture(scope="module")
def trial_context(problem):
    experiment = Experiment(problem, log=None)
    data = problem.data
    initial = experiment.curvature.compute(
        experiment.model, [("unprivileged", data.unprivileged), ("privileged", data.privileged)], 0
    )
    return TrialContext(problem, initial, f1_floor=0.0, f1_floor_rel=0.0, n_boot=50, progress_every_s=0.0)


def test_trial_reports_each_step_then_its_final_record(trial_context):
    reports: list[dict] = []
    rec = run_trial(TrialSettings(7, 0.2, 0.05, 0.1), trial_context, report=reports.append)
    steps = [r for r in reports if not r["final"]]
    assert [r["pruning_step"] for r in steps] == [0, 1, 2]
    final = reports[-1]
    assert final["final"] and final["trial_number"] == 7
    assert final["val_avg_f1"] == rec.val_avg_f1 and final["constraint"] == [0.0 - rec.val_avg_f1]
    assert rec.feasible and not rec.aborted and rec.achieved_ratio == pytest.approx(0.1, abs=1e-4)


def test_step_progress_is_throttled_and_the_final_report_always_sent(trial_context):
    from dataclasses import replace

    reports: list[dict] = []
    rec = run_trial(
        TrialSettings(7, 0.2, 0.05, 0.1), replace(trial_context, progress_every_s=3600), report=reports.append
    )
    assert [r["final"] for r in reports] == [True]  # a fast trial: no step waited an hour
    assert reports[0]["val_avg_f1"] == rec.val_avg_f1


def test_throttled_progress_lines():
    from fairprune_core.throttle import throttled

    lines: list[str] = []
    every = throttled(lines.append, 0)
    every("step 1")
    every("  step 2")
    throttled(lines.append, 3600)("never said")
    assert lines == ["  step 1", "  step 2"]


def test_the_sweeps_driver_shows_the_progress_of_its_long_work_and_none_of_short_work(
    synthetic, checkpoint, problem, monkeypatch
):
    """The driver's experiment (baselines, step-0 curvature) logs its methods' progress, throttled:
    a pruning baseline's steps when every line is due, nothing when none is."""
    from fairprune_core.config import SweepConfig
    from fairprune_core.sweep import runner

    cfg = SweepConfig(name="x", n_boot=100)
    obd = make_method("obd", step_ratio=0.05, final_ratio=0.1)
    for every_s, expect_lines in ((0.0, True), (3600.0, False)):
        monkeypatch.setattr(runner, "PROGRESS_EVERY_S", every_s)
        lines: list[str] = []
        runner.driver_experiment(cfg, synthetic, checkpoint, problem, lines.append).run_method(obd)
        assert bool(lines) == expect_lines, lines
        if expect_lines:
            assert all(line.startswith("  ") for line in lines), lines
            assert any("pruned 10.00%" in line for line in lines), lines


def test_throttle():
    from fairprune_core.throttle import Throttle

    always, hourly = Throttle(0), Throttle(3600)
    assert [always.due() for _ in range(3)] == [True] * 3
    assert [hourly.due() for _ in range(3)] == [False] * 3
    with pytest.raises(ValueError, match="every_s must be >= 0"):
        Throttle(-1)


def test_the_shipped_vanilla_reference_and_reused_validation_pass_change_nothing(problem, trial_context):
    """A trial given the vanilla reference (predictions, step-0 validation metrics) and reusing
    its last step's validation logits measures exactly what a trial computing them all does."""
    from dataclasses import replace

    from fairprune_core.evaluation import evaluate
    from fairprune_core.methods.fairprune import FairPrune

    reference = Experiment(problem, log=None).reference()
    settings = TrialSettings(3, 0.3, 0.05, 0.1)
    plain = run_trial(settings, trial_context)
    shipped = run_trial(settings, replace(trial_context, reference=reference))
    assert {k: v for k, v in vars(shipped).items()} == {k: v for k, v in vars(plain).items()}
    # the step-0 row and the final metrics, against a fresh evaluation of each model
    ex = Experiment(problem, log=None, reference=reference)
    rec = ex.run_method(FairPrune(beta=0.3, step_ratio=0.05, final_ratio=0.1), initial_curvature=trial_context.initial)
    fresh0 = evaluate(problem.build_model(), problem.val, num_classes=problem.num_classes)
    assert rec.output.history[0]["val_avg_f1"] == fresh0["avg"]["f1"] and rec.output.history[0]["eval_seconds"] == 0
    final = evaluate(rec.output.model, problem.val, num_classes=problem.num_classes)
    np.testing.assert_array_equal(rec.metrics["val"]["predictions"], final["predictions"])
    np.testing.assert_allclose(rec.metrics["val"]["logits"], final["logits"], rtol=1e-5, atol=1e-6)
    assert rec.metrics["val"]["avg"] == final["avg"] and rec.metrics["val"]["eopp1"] == final["eopp1"]
    no_ref = Experiment(problem, log=None)
    again = no_ref.evaluate(FairPrune(beta=0.3, step_ratio=0.05, final_ratio=0.1), rec.output, 0.0)
    for split in ("val", "test"):  # the paired change against vanilla and the collapse check agree
        assert again.vs_vanilla[split]["eopp1"] == rec.vs_vanilla[split]["eopp1"]
        assert again.sanity[split] == rec.sanity[split]


def test_a_step_above_the_final_ratio_runs_with_step_equal_final(trial_context):
    rec = run_trial(TrialSettings(1, 0.2, 0.3, 0.1), trial_context)
    assert rec.step_ratio == 0.1 and rec.achieved_ratio == pytest.approx(0.1, abs=1e-4)


def test_reaching_the_fairness_target_is_feasible_falling_below_the_floor_is_not(trial_context):
    from dataclasses import replace

    # the target (Eopp1 <= 1) is met after the first step: the paper's stopping rule, a success
    reached = run_trial(TrialSettings(2, 0.2, 0.05, 0.3), replace(trial_context, stop_eopp1=1.0))
    assert reached.reached_target and not reached.aborted and reached.feasible
    assert reached.achieved_ratio == pytest.approx(0.05, abs=1e-4)
    # a floor above any F1: the first step aborts the trial, which is infeasible
    aborted = run_trial(TrialSettings(3, 0.2, 0.05, 0.3), replace(trial_context, f1_floor=2.0, f1_floor_rel=0.9))
    assert aborted.aborted and not aborted.reached_target and not aborted.feasible
    assert "below the floor" in aborted.stop_reason


def test_a_collapsed_trial_says_which_rule_and_its_numbers(problem, trial_context):
    """Collapsed below the relative floor (here above any pruned model's F1): the record, its
    final report and the sweep's progress row name the rule with the model's F1 and the floor."""
    from dataclasses import replace

    from fairprune_core.sweep.table import trial_status

    fine = run_trial(TrialSettings(4, 0.2, 0.05, 0.1), trial_context)
    assert not fine.collapsed and fine.collapse_reason == "" and trial_status(fine.final_report()) == "feasible"
    rec = run_trial(TrialSettings(5, 0.2, 0.05, 0.1), replace(trial_context, f1_floor_rel=1.5))
    vanilla = Experiment(problem, log=None).vanilla_f1("val")
    reason = f"avg F1 {rec.val_avg_f1:.3f} below the floor {1.5 * vanilla:.3f}"
    assert rec.collapsed and not rec.feasible and rec.collapse_reason.startswith(reason), rec.collapse_reason
    assert trial_status(rec.final_report()) == f"COLLAPSED ({rec.collapse_reason})"
    assert trial_status({"collapsed": True}) == "COLLAPSED (one class or below the F1 floor)"  # older results


def test_the_feasibility_rule():
    assert is_feasible(0.8, 0.7, aborted=False)
    assert not is_feasible(0.6, 0.7, aborted=False)
    assert not is_feasible(0.8, 0.7, aborted=True)


def test_the_readme_example_method_runs_through_the_engine(problem, monkeypatch):
    """The README's "Adding a method" example, as written, is a working method."""
    import sys
    import types

    from .conftest import REPO

    text = (REPO / "README.md").read_text()
    start = text.index("# fairprune_core/methods/magnitude.py")
    code = text[start : text.index("```", start)]
    module = types.ModuleType("fairprune_core.methods.magnitude")
    module.__package__ = "fairprune_core.methods"
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "README.md", "exec"), module.__dict__)
    method = module.Magnitude(step_ratio=0.05, final_ratio=0.1)
    record = Experiment(problem, n_boot=20, log=None).run_method(method)
    assert record.method == "magnitude" and record.achieved_ratio == pytest.approx(0.1, abs=1e-4)
    # the smallest magnitudes went: every pruned weight was no larger than any kept one at its step
    weights = dict(problem.build_model().named_parameters())
    pruned = torch.cat([weights[n].detach().abs()[~m] for n, m in record.output.masks.items()])
    kept = torch.cat([weights[n].detach().abs()[m] for n, m in record.output.masks.items()])
    assert pruned.max() <= kept.min() + 1e-6  # one-shot order holds: magnitudes do not change between steps
    assert '"magnitude": "fairprune_core.methods.magnitude:Magnitude"' in text  # its registry line is shown


def test_a_training_method_without_a_training_setup_says_what_it_needs(problem):
    with pytest.raises(ValueError, match=r"'advconf' trains its own model.*training=training_setup"):
        Experiment(problem, log=None).run_method(make_method("advconf"))


def test_sweep_baselines_are_checked():
    from fairprune_core.config import SweepConfig, default_baselines

    assert default_baselines("synthetic") == ("vanilla", "obd")
    assert default_baselines("isic2019") == ("vanilla", "obd", "advconf", "advrev", "domainindep")
    with pytest.raises(ValueError, match="must start with vanilla"):
        SweepConfig(name="s", baselines=("obd",))
    with pytest.raises(ValueError, match="got vanilla, kfac"):
        SweepConfig(name="s", baselines=("vanilla", "kfac"))


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("n_boot", 0, "--bootstrap"),
        ("cpus_per_worker", 0, "--cpus-per-worker"),
        ("gpus_per_worker", -1, "--gpus-per-worker"),
        ("gpus_per_trial", -0.5, "--gpus-per-trial"),
    ],
)
def test_sweep_settings_out_of_range_are_refused_naming_the_flag(field, value, flag):
    from fairprune_core.config import SweepConfig

    with pytest.raises(ValueError, match=flag):
        SweepConfig(name="x", **{field: value})


@pytest.mark.parametrize(
    ("field", "value", "flag"), [("stop_eopp1", -1.0, "--stop-eopp1"), ("max_sub_batch", 0, "--max-sub-batch")]
)
def test_prune_settings_out_of_range_are_refused_naming_the_flag(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        PruneConfig(**{field: value})


def test_a_reference_computed_on_another_kind_of_device_is_not_used(problem):
    from dataclasses import replace

    reference = Experiment(problem, log=None, device="cpu").reference()
    assert reference.device == "cpu"
    assert Experiment(problem, log=None, device="cpu", reference=reference).context().initial_validation
    elsewhere = Experiment(problem, log=None, device="cpu", reference=replace(reference, device="cuda"))
    assert elsewhere.context().initial_validation is None  # its own step-0 validation pass instead
