"""Reports from run and experiment directories: plots (matplotlib, Agg), tables, one offline HTML
page and a Markdown summary; optional TensorBoard export. Reports only read run directories."""
from .build import experiment_document, run_document, write_report
from .calibration import plot_reliability
from ..evaluate import confident_mistakes
from .grids import per_class_accuracy, plot_confusion, plot_prediction_grid
from .load import ExperimentRecord, PointRecord, RunRecord, predict_test, read_experiment, read_run
from .plots import (figure_png, plot_comparison, plot_comparison_curves, plot_learning_curves, plot_sweep_curves,
                    plot_sweep_final)
from .tb import tensorboard_available, write_tensorboard

__all__ = [
    "ExperimentRecord", "PointRecord", "RunRecord", "confident_mistakes", "experiment_document",
    "figure_png", "per_class_accuracy", "plot_comparison", "plot_comparison_curves", "plot_confusion",
    "plot_learning_curves", "plot_prediction_grid", "plot_reliability", "plot_sweep_curves", "plot_sweep_final",
    "predict_test", "read_experiment",
    "read_run", "run_document", "tensorboard_available", "write_report", "write_tensorboard",
]
