"""Experiments: several runs under one directory (comparisons, sweeps, repeated seeds, tuning)."""
from .results import collect
from .runner import compare, cross_validate, run_experiment
from .spec import Experiment, ExperimentSpec, build_experiment, load_experiment

__all__ = ["Experiment", "ExperimentSpec", "build_experiment", "collect", "compare", "cross_validate",
           "load_experiment", "run_experiment"]
