"""Scoring colorized frames against the truth: metrics, warping error, clip comparison."""
