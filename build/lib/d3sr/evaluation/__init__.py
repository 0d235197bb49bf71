"""Evaluation — the paper's metric suite (pyiqa, imported lazily and only here), SR/HR folder evaluation, metric
weight files, reports and complexity counts; it may import models/, inference/ and the ground floor (images, options,
errors, psnr_ssim), and nothing but entry points imports it."""

from d3sr.evaluation.folders import Evaluation, evaluate_folders
from d3sr.evaluation.suite import DEFAULT_METRICS, METRICS, MetricSuite
from d3sr.evaluation.weights import check_weights

__all__ = ["DEFAULT_METRICS", "METRICS", "Evaluation", "MetricSuite", "check_weights", "evaluate_folders"]
