"""Evaluation: the paper's metric suite (pyiqa, imported lazily), folder evaluation, reports and complexity."""

from d3sr.evaluation.metrics import METRICS, Evaluation, MetricSuite, evaluate_folders, psnr_y, ssim_y
from d3sr.evaluation.weights import check_weights

__all__ = ["METRICS", "Evaluation", "MetricSuite", "check_weights", "evaluate_folders", "psnr_y", "ssim_y"]
