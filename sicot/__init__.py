"""SICoT: side-information co-training for long-tailed product recognition.

This folder holds only part of the package: setup.py's `package_dir` installs the repository's
top-level `pipeline/`, `trainer/` and `serving/` folders as `sicot.pipeline`, `sicot.trainer`
and `sicot.serving` (README.md, "Layout").
"""
__version__ = "0.1.0"
