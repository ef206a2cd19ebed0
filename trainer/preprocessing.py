"""The Transform's former dotted name, kept for pipelines compiled before `trainer/` had
sub-packages: they name `sicot.trainer.preprocessing.preprocessing_fn`. New code and new
pipelines use `sicot.trainer.transform.preprocessing`."""
from sicot.trainer.transform.preprocessing import preprocessing_fn

__all__ = ["preprocessing_fn"]
