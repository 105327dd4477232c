"""Experiments: several runs under one directory (comparisons, sweeps, repeated seeds, tuning)."""
from .results import collect
from .runner import compare, run_experiment
from .spec import Experiment, ExperimentSpec, build_experiment, load_experiment

__all__ = ["Experiment", "ExperimentSpec", "build_experiment", "collect", "compare",
           "load_experiment", "run_experiment"]
