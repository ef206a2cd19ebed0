"""SICoT: side-information co-training for long-tailed product recognition."""
__version__ = "0.1.0"
