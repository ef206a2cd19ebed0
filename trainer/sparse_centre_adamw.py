"""`SparseCentreAdamW`: AdamW for the network, sparse SGD (momentum) for large class-centre tables.

With a million classes the centre matrix [C, D] dominates: AdamW keeps two more [C, D] slots
and, as Keras 3 implements it, turns a sparse (`IndexedSlices`) gradient into a dense update
of the whole table every step (`bench/classifier_scaling.py` measures it). Partial FC trains
the centres with plain SGD + momentum and touches only the sampled rows; this optimizer does
the same for the variables it is told are centre tables, and AdamW for everything else.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="sicot")
class SparseCentreAdamW(keras.optimizers.AdamW):
    """AdamW, except for centre tables, which get a row-sparse SGD (lazy momentum) step.

    A centre table is a variable whose path ends with one of `centre_variable_suffixes`
    (`SampledClassifierHead` names its tables `centres` and `bias`, so the default
    `("_head/centres", "_head/bias")` matches `visual_head/centres` etc.). For a centre table:
      * no Adam slots, no weight decay (a decoupled decay would rewrite all C rows per step);
      * with an `IndexedSlices` gradient (TensorFlow, `ops.take` of rows) only those rows are
        updated: m[r] = momentum * m[r] + g[r]; w[r] -= lr_c * m[r], where
        lr_c = centre_learning_rate * lr(t) / lr(0) follows the main schedule;
      * a dense gradient (other backends) gets the same update on every row.
    A momentum slot [C, D] exists only when `centre_momentum > 0` (one table, not Adam's two).

    Args:
      centre_learning_rate: float > 0. SGD learning rate of the centre tables at step 0.
      centre_momentum: float in [0, 1). 0 keeps no optimizer state for the centres.
      centre_variable_suffixes: tuple of str. Variable path suffixes that mark centre tables.
      **kwargs: `keras.optimizers.AdamW` arguments.
    """

    def __init__(self, centre_learning_rate=0.5, centre_momentum=0.0,
                 centre_variable_suffixes=("_head/centres", "_head/bias"), **kwargs):
        super().__init__(**kwargs)
        if float(centre_learning_rate) <= 0:
            raise ValueError(f"SparseCentreAdamW: centre_learning_rate={centre_learning_rate!r} "
                             f"must be > 0")
        if not 0.0 <= float(centre_momentum) < 1.0:
            raise ValueError(f"SparseCentreAdamW: centre_momentum={centre_momentum!r} must be in "
                             f"[0, 1)")
        self.centre_learning_rate = float(centre_learning_rate)
        self.centre_momentum = float(centre_momentum)
        self.centre_variable_suffixes = tuple(centre_variable_suffixes)

    def _is_centre(self, variable) -> bool:
        path = getattr(variable, "path", None) or getattr(variable, "name", "")
        return any(path.endswith(s) for s in self.centre_variable_suffixes)

    def build(self, var_list):
        if self.built:
            return
        var_list = list(var_list)
        dense = [v for v in var_list if not self._is_centre(v)]
        centres = [v for v in var_list if self._is_centre(v)]
        super().build(dense)  # Adam slots for the dense variables only
        self._centre_keys = {}
        self._centre_momentums = []
        for variable in centres:
            key = self._var_key(variable)
            self._trainable_variables_indices[key] = len(self._trainable_variables)
            self._trainable_variables.append(variable)
            self._centre_keys[key] = len(self._centre_momentums)
            self._centre_momentums.append(
                self.add_variable_from_reference(variable, "centre_momentum")
                if self.centre_momentum > 0 else None)
            # Decoupled weight decay would touch every row each step.
            self._exclude_from_weight_decay_cache = getattr(
                self, "_exclude_from_weight_decay_cache", {})
            self._exclude_from_weight_decay_cache[key] = False

    def _use_weight_decay(self, variable):
        if self._var_key(variable) in getattr(self, "_centre_keys", {}):
            return False
        return super()._use_weight_decay(variable)

    def update_step(self, gradient, variable, learning_rate):
        slot = self._centre_keys.get(self._var_key(variable))
        if slot is None:
            return super().update_step(gradient, variable, learning_rate)
        lr = ops.cast(learning_rate, variable.dtype)
        initial = self._initial_learning_rate()
        lr_c = ops.cast(self.centre_learning_rate, variable.dtype) * lr / ops.cast(
            initial, variable.dtype)
        momentum = self._centre_momentums[slot]
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if isinstance(gradient, tf.IndexedSlices):
                return self._sparse_step(gradient, variable, momentum, lr_c)
        gradient = ops.cast(gradient, variable.dtype)
        if momentum is not None:
            self.assign(momentum, self.centre_momentum * momentum + gradient)
            gradient = momentum
        self.assign_sub(variable, lr_c * gradient)

    def _sparse_step(self, gradient, variable, momentum, lr_c):
        import tensorflow as tf

        # Duplicate rows (a class twice in one sample) are summed first, so the momentum of a
        # row is updated once per step.
        rows, position = tf.unique(gradient.indices)
        values = tf.math.unsorted_segment_sum(tf.cast(gradient.values, variable.dtype),
                                              position, tf.shape(rows)[0])
        if momentum is not None:
            values = self.centre_momentum * tf.gather(momentum, rows) + values
            self.assign(momentum, tf.IndexedSlices(values, rows, gradient.dense_shape))
        self.assign_sub(variable, tf.IndexedSlices(lr_c * values, rows, gradient.dense_shape))

    def _initial_learning_rate(self):
        schedule = self._learning_rate
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            return schedule(0)
        return schedule

    def get_config(self):
        config = super().get_config()
        config.update(centre_learning_rate=self.centre_learning_rate,
                      centre_momentum=self.centre_momentum,
                      centre_variable_suffixes=list(self.centre_variable_suffixes))
        return config
