"""scikit-learn estimators over poswise's networks and trainers.

``MLPClassifier`` and ``MLPRegressor`` are drop-in replacements for scikit-learn's classes of
the same names where a parameter or attribute means the same thing, plus poswise's own
``schedule`` (PWO, GD, ...) and ``update`` (the update rule). They are thin: hyper-parameters
are validated by scikit-learn's parameter-constraint machinery, arrays are checked by
scikit-learn's ``validate_data`` (its error messages, ``n_features_in_``,
``feature_names_in_``) and converted by poswise's layout module inside the trainers, and the
work is done by a poswise trainer on a :class:`poswise.MLP`. scikit-learn is an optional
dependency (``pip install "poswise[sklearn]"``); ``import poswise`` does not import it.

Differences from scikit-learn, by design (docs/sklearn.md):

* ``batch_size=None`` (the default) is full-batch training: one epoch is one full-batch
  step (GD) or one position-wise sweep (PWO). ``"auto"`` means ``min(200, n_samples)`` as
  in scikit-learn.
* ``loss_curve_[i]`` is the loss after epoch ``i + 1`` on the training data (scikit-learn
  records the mean of the mini-batch losses seen during the epoch, i.e. before its steps).
* ``alpha`` becomes the update rule's ``weight_decay = alpha / batch``, ``batch`` being the
  number of samples per step: the gradient of scikit-learn's penalty
  ``alpha / (2 n) ||W||^2`` exactly, on the weight matrices only (``decay_biases=False``)
  unless the rule has a weight decay of its own, which decays the biases too.
  ``loss_`` adds the penalty as scikit-learn does.
* Adam is ``torch.optim``'s: epsilon is added after the bias correction (scikit-learn adds
  it before), and each layer counts its own steps (the same count under GD; under PWO
  deeper layers step more often).
* ``coefs_[l]`` is a transposed view ``(n_in, n_out)`` of the network's ``weights[l]``
  (Fortran-ordered), so training and the attributes never disagree.
* ``partial_fit`` and a warm-started ``fit`` keep the network and the training session (the
  update rule's state) while the training parameters stay the same; scikit-learn restarts
  its optimizer on every warm-started ``fit``.
* Weights start Glorot-uniform (scikit-learn's initialisation for all activations but
  logistic) drawn by poswise from ``random_state``: equal seeds do not give scikit-learn's
  weights.
* ``sample_weight`` gives the weighted mean loss (weight k = k copies of a sample); no
  ``learning_rate`` schedules.
"""
from ._base import ACTIVATION_NAMES, DEFAULT_LEARNING_RATES, SCHEDULES
from ._estimators import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor", "ACTIVATION_NAMES", "DEFAULT_LEARNING_RATES",
           "SCHEDULES"]
