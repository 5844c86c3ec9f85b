"""Analyses of a Comparison: transitions, correlations, bounds, export and plots."""
