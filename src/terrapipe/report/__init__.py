"""Figures and reports made from the processed data and the runs."""
