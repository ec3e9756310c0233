"""terrapipe: reproducible EO foundation-model pipelines."""
__version__ = "0.1.0"
