"""compete — a whole competition: one run's stages, the run folder, reports, submissions, checks
before a run, ensembles (their math apart from the runs that train members), Kaggle.

The competitions themselves (files, columns, classes, recipes) are data in
``d2lkaggle/specs/competitions.py``, a floor below, where the wings' ``get_net`` can read them
too; ``from d2lkaggle.compete import COMPETITIONS, get_competition`` finds them from here.

May import: every room below it and, through the registry, the wings.
"""
from ..utils.exports import lazy_exports

#: public name -> the module of this room that defines it
EXPORTS = {
    "run_competition": "run",
    "plan_run": "run",
    "RunPlan": "run",
    "load_data": "load",
    "CompetitionData": "load",
    "write_submission": "submission",
    "validate_submission": "submission",
    "ensemble_runs": "ensembles",
    "run_ensemble": "members",
    "run_folds": "members",
    "soft_vote": "voting",
    "hard_vote": "voting",
    "fit_weights": "voting",
    "log_loss": "voting",
    "accuracy": "voting",
    "load_run": "runfolder",
    "save_run_predictions": "runfolder",
    "download_competition": "kaggle",
    "submit": "kaggle",
    "find_lr": "lrfind",
    "labelled_test_metrics": "report",
    "fit_temperature": "calibration",
    "apply_temperature": "calibration",
    # the competitions' table lives in specs (data, below the wings' get_net)
    "COMPETITIONS": "d2lkaggle.specs.competitions",
    "Competition": "d2lkaggle.specs.competitions",
    "get_competition": "d2lkaggle.specs.competitions",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
