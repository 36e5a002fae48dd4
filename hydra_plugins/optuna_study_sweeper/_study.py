"""Optuna's ask-and-tell loop run by Hydra, for studies in a database that many processes share.

(Hydra's plugin scan skips this module for its leading underscore: it imports optuna, which a
project installed without requirements-sweeps.txt lacks. sweeper.py is the plugin, and imports it
when a search starts.)

Hydra's own Optuna plugin (hydra-optuna-sweeper 1.3.0, its last release) needs optuna < 3, whose
database storage no longer works with SQLAlchemy 2, and its loop has none of what a shared study
needs. This is that loop on current Optuna, with Optuna doing the work:

- ``n_trials`` is the study's size, not this process's share: each process asks for trials until
  the study holds that many, so several processes (or a search continued after a kill) finish the
  study between them. A trial that another process asked for at the same moment, one too many, is
  told FAIL with the user attribute ``surplus`` and is not counted.
- While a batch of trials runs, a thread records their heartbeats in the storage. A process that
  was killed stops beating; after ``grace_period`` seconds any other process marks its trials FAIL,
  and Optuna's RetryHeartbeatStaleTrialCallback queues each again (up to ``max_retry`` times), so
  no trial is lost silently.
- A trial's job runs in ``<sweep dir>/<trial number>``, so processes that share a sweep folder,
  or a search continued in its own folder, never write into each other's jobs.
- The job is told its trial number (``OPTUNA_TRIAL_NUMBER``), so train.py can report each epoch's
  validation accuracy to the study and stop a hopeless trial (the ``pruner``); such a job raises
  ``optuna.TrialPruned`` and its trial is told PRUNED.
- A job stopped by a signal (status ``interrupted`` in its summary.json) is told FAIL and queued
  again, and the search stops, printing the command that continues it. So does a signal at any
  other moment (a trial being launched, asked or told): no trial stays RUNNING (_guards.py).
- A study that already holds ``n_trials`` trials runs nothing, says so, and writes its results
  (optimization_results.yaml, trials.csv) in this sweep folder, wherever its trials ran.

The search space is Hydra's override syntax, as in hydra-optuna-sweeper: ``choice(2, 4)``,
``range(1, 9, 2)``, ``interval(0.0, 0.3)``, ``tag(log, interval(1e-4, 1e-2))``, ``tag(int, ...)``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hydra_plugins.optuna_study_sweeper._guards import Heartbeat, StopOnSignal
from hydra_plugins.optuna_study_sweeper._space import search_space
from src.contract import Status, read_summary

log = logging.getLogger(__name__)

TRIAL_ENV = "OPTUNA_TRIAL_NUMBER"  # how a job learns which trial it is
RETRY = optuna.storages.RetryHeartbeatStaleTrialCallback


class SearchStopped(CompactHydraException):
    """A trial was interrupted: Hydra shows the message (the command that goes on), no traceback."""


class StudyLoop:
    """What OptunaStudySweeper (sweeper.py) does, with optuna imported."""

    def __init__(
        self,
        sampler: Callable[..., optuna.samplers.BaseSampler],
        pruner: optuna.pruners.BasePruner | None,
        direction: str,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        heartbeat_interval: int,
        grace_period: int,
        max_retry: int | None,
        params: DictConfig | None,
    ) -> None:
        self.make_sampler, self.pruner = sampler, pruner
        self.direction, self.storage_url, self.study_name = direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = (
            n_trials,
            max(1, n_jobs),
            max_failure_rate,
        )
        self.heartbeat_interval, self.grace_period, self.max_retry = (
            heartbeat_interval,
            grace_period,
            max_retry,
        )
        self.params = params or {}

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def storage(self) -> optuna.storages.BaseStorage | None:
        if not self.storage_url:
            return None  # in memory: this process only, nothing to share or continue
        import sqlalchemy.exc

        for attempt in range(5):
            try:
                with _quiet():
                    return optuna.storages.RDBStorage(
                        self.storage_url,
                        heartbeat_interval=self.heartbeat_interval,
                        grace_period=self.grace_period,
                        heartbeat_stale_trial_callback=RETRY(self.max_retry),
                    )
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
                # Processes started together on an empty database both create Optuna's tables
                # (PostgreSQL: a unique violation, or "relation ... already exists"); the one that
                # loses finds them made when it tries again.
                lost_the_race = isinstance(
                    err, sqlalchemy.exc.IntegrityError
                ) or "already exists" in str(err)
                if not lost_the_race or attempt == 4:
                    raise
                time.sleep(1 + attempt)

    def sweep(self, arguments: list[str]) -> None:
        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + arguments)
        for name in fixed:
            space.pop(name, None)
        study = self._open_study()
        self.in_flight: list[optuna.Trial] = []  # asked, not yet told
        if self._counted(study, waiting=False) >= self.n_trials:
            log.info(
                "The study already holds its %d trials: nothing to run (n_trials counts the "
                "study's trials, not this command's; raise hydra.sweeper.n_trials for more)",
                self.n_trials,
            )
        with StopOnSignal():
            try:
                self._run_trials(study, space, fixed)
            except KeyboardInterrupt:  # a signal, or Ctrl-C, between or around the trials' runs
                self._interrupted(study)
        self._write_results(study)

    def _run_trials(self, study: optuna.Study, space: dict, fixed: dict) -> None:
        failures = runs = 0
        while True:
            if self.storage_url:
                with _quiet():  # a killed process's trials: FAIL, queued again
                    optuna.storages.fail_stale_trials(study)
            to_go = self.n_trials - self._counted(study, waiting=False)
            if to_go <= 0:
                break
            for _ in range(min(to_go, self.n_jobs)):
                if trial := self._ask(study, space, fixed):
                    self.in_flight.append(trial)
            if not self.in_flight:
                break  # another process asked for the last trials
            trials = self.in_flight
            returns = self._launch(study, trials, fixed)
            runs += len(returns)
            failures += self._tell_all(study, trials, returns)
            self.in_flight = []
            if failures / runs > self.max_failure_rate:
                for ret in returns:
                    # Deliberate: Hydra's JobReturn.return_value raises a failed job's own error,
                    # so reading it ends the search with that error.
                    ret.return_value  # noqa: B018

    def _interrupted(self, study: optuna.Study) -> None:
        """The trials in flight when a signal came are told FAIL and queued again (none stays
        RUNNING); the search stops with the command that continues it."""
        stopped = []
        for trial in self.in_flight:
            if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                self._fail_and_queue(study, trial)
                stopped.append(trial.number)
        raise SearchStopped(self._stopped_sentence(study, stopped))

    def _stopped_sentence(self, study: optuna.Study, trials: list[int]) -> str:
        if not self.storage_url:
            return "the search was interrupted (its study was in memory)."
        return (
            (
                f"trial {', '.join(map(str, trials))} was interrupted and is queued again; "
                if trials
                else "the search was interrupted between trials; "
            )
            + "continue the search with the same command plus "
            f"hydra.sweep.dir={self.config.hydra.sweep.dir} hydra.sweeper.storage="
            f"{self.storage_url} hydra.sweeper.study_name={study.study_name}"
        )

    def _open_study(self) -> optuna.Study:
        """The study, created or loaded (a SQLite file's folder made first)."""
        if self.storage_url and self.storage_url.startswith("sqlite:///"):
            Path(self.storage_url.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage(),
            sampler=self.make_sampler(),
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        log.info(
            "Study %s in %s: %d of %d trials there already",
            study.study_name,
            self.storage_url or "memory",
            self._counted(study),
            self.n_trials,
        )
        return study

    def _launch(self, study: optuna.Study, trials: list[optuna.Trial], fixed: dict) -> list:
        """Runs the trials' jobs, each in its own folder, beating their hearts meanwhile."""
        job_overrides = [
            [f"{k}={v}" for k, v in t.params.items()]
            + [f"{k}={v}" for k, v in fixed.items()]
            + [f"hydra.sweep.subdir={t.number}", f"+hydra.job.env_set.{TRIAL_ENV}={t.number}"]
            for t in trials
        ]
        with Heartbeat(study, trials, self.heartbeat_interval if self.storage_url else 0):
            return self.launcher.launch(job_overrides, initial_job_idx=trials[0].number)

    def _tell_all(self, study: optuna.Study, trials: list[optuna.Trial], returns: list) -> int:
        """Tells the study how each job ended; the number that failed. Raises SearchStopped
        when a job was interrupted."""
        failures, interrupted = 0, []
        for trial, ret in zip(trials, returns):
            failed = self._tell(study, trial, ret)
            failures += failed
            if failed and _run_status(ret) == Status.INTERRUPTED:
                interrupted.append(trial.number)
        if interrupted:
            raise SearchStopped(self._stopped_sentence(study, interrupted))
        return failures

    def _ask(self, study: optuna.Study, space: dict, fixed: dict) -> optuna.Trial | None:
        with _quiet():
            trial = study.ask()
        # A retried trial keeps its parameters; a new one draws them with a sampler seeded by its
        # number, so processes that share a study never draw the same values from the same seed.
        study.sampler = self.make_sampler(**self._seed_for(trial.number))
        for name, distribution in space.items():
            trial._suggest(name, distribution)
        retry = "retry_history" in study._storage.get_trial_system_attrs(trial._trial_id)
        if not retry and self._position(study, trial.number) >= self.n_trials:
            trial.set_user_attr("surplus", "asked when the study already had n_trials trials")
            study.tell(trial, state=TrialState.FAIL)
            return None
        return trial

    def _seed_for(self, number: int) -> dict:
        seed = getattr(self.make_sampler, "keywords", {}).get("seed")
        return {"seed": seed + number} if seed is not None else {}

    @staticmethod
    def _superseded(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
        """Trials that were queued again (their retry counts instead) or asked one too many."""
        out = {t.number for t in trials if "surplus" in t.user_attrs}
        with _quiet():
            for t in trials:
                out.update(RETRY.retry_history(t))
        return out

    def _counted(self, study: optuna.Study, waiting: bool = True) -> int:
        trials = study.get_trials(deepcopy=False)
        gone = self._superseded(trials)
        return sum(
            1 for t in trials if t.number not in gone and (waiting or t.state != TrialState.WAITING)
        )

    def _position(self, study: optuna.Study, number: int) -> int:
        trials = study.get_trials(deepcopy=False)
        gone = self._superseded(trials)
        return sum(1 for t in trials if t.number < number and t.number not in gone)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any) -> bool:
        """Tells the study how the trial's job ended; True when it failed."""
        error = ret._return_value if isinstance(ret._return_value, BaseException) else None
        if isinstance(error, optuna.TrialPruned):
            study.tell(trial, state=TrialState.PRUNED)
            return False
        if error is not None and _run_status(ret) == Status.INTERRUPTED:
            # Its run says how to resume that run alone; a search goes on with its own command.
            self._fail_and_queue(study, trial)
            return True
        try:
            value = float(ret.return_value)  # raises the job's error
        except Exception as err:
            log.warning("trial %d failed: %s", trial.number, err)
            study.tell(trial, state=TrialState.FAIL)
            return True
        study.tell(trial, value)
        return False

    def _fail_and_queue(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """FAIL, and (a stored study) the same parameters queued to run again."""
        study.tell(trial, state=TrialState.FAIL)
        if self.storage_url:
            callback = study._storage.get_heartbeat_stale_trial_callback()
            callback(study, study._storage.get_trial(trial._trial_id))

    def _write_results(self, study: optuna.Study) -> None:
        """optimization_results.yaml (the counts, the best trial) and trials.csv (every trial of
        the study, whichever process ran it) in this sweep folder, made if no trial ran here."""
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        results = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": self.storage_url,
            "trials": {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState},
        }
        if done:
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
            log.info("Best trial %d: %s -> %s", best.number, best.params, best.value)
        folder = Path(self.config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), folder / "optimization_results.yaml")
        study.trials_dataframe().to_csv(folder / "trials.csv", index=False)
        log.info("The study's results: %s and trials.csv", folder / "optimization_results.yaml")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Heartbeats and retries are marked experimental (since Optuna 2.9); they are what a shared
    study needs, so their warnings are left out, as is study.ask()'s that heartbeats go with
    Study.optimize: here this sweeper's own thread records them (Heartbeat)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings(
            "ignore", message="Heartbeat of storage is supposed to be used with"
        )
        yield


def _run_status(ret: Any) -> str | None:
    """The status in the job's summary.json (train.py's: completed, failed, interrupted, pruned)."""
    try:
        folder = Path(ret.hydra_cfg.hydra.runtime.output_dir)
    except AttributeError:
        return None
    return read_summary(folder).get("status")
