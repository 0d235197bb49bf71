"""Evaluation: the paper's metric suite, folder evaluation and tables."""
