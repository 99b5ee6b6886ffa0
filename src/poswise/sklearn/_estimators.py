"""MLPClassifier and MLPRegressor: see the package docstring for how they differ from
scikit-learn's classes of the same names."""
import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context
from sklearn.utils.multiclass import (_check_partial_fit_first_call, type_of_target,
                                      unique_labels)
from sklearn.utils.validation import column_or_1d

from ._base import _BaseMLP

__all__ = ["MLPClassifier", "MLPRegressor"]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier trained by poswise.

    Two classes train one sigmoid output with binary cross-entropy (``loss="bce"``), more
    classes a softmax output with cross-entropy, a multilabel indicator matrix one sigmoid
    output per label (``bce`` summed over the labels), as scikit-learn's ``MLPClassifier``.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default (100,)
        Widths of the hidden layers.
    activation : {"relu", "tanh", "logistic", "identity", "sigmoid", "leaky_relu"}
        Hidden-layer activation; ``"logistic"`` (scikit-learn's name) is ``"sigmoid"``.
    schedule : {"pwo", "gd", "layerwise"}, default "pwo"
        The trainer: a key of ``poswise.trainers.SCHEDULES`` (position-wise optimizer,
        gradient descent, layer-wise gradient descent).
    update : str or poswise.UpdateRule, default "sgd"
        The update rule: a name of ``poswise.updates.UPDATE_RULES`` or a rule object.
    alpha : float >= 0, default 1e-4
        L2 penalty ``alpha / (2 n) ||W||^2``, applied as the rule's ``weight_decay`` of
        ``alpha / n`` (``n`` samples per step) on the weight matrices, not the biases, as
        scikit-learn does (unless the rule object has a weight decay of its own: then
        both decays apply to every parameter). With ``update="adamw"`` it adds to
        AdamW's decoupled decay.
    batch_size : int, "auto" or None, default None
        Samples per step. ``None`` is full batch (scikit-learn's default is ``"auto"``,
        ``min(200, n_samples)``, which is accepted).
    learning_rate_init : float > 0, optional
        The (constant) learning rate. Default: 0.1 for the SGD rules ("sgd", "momentum",
        "nesterov"), whose full-batch steps can be large, and scikit-learn's 0.001 for
        the adaptive ones ("adam", "adamw", "rmsprop").
    max_iter : int >= 1, default 200
        Maximum number of epochs.
    shuffle : bool, default True
        Shuffle the samples every epoch before cutting them into mini-batches (``False``:
        batches in data order, as in scikit-learn).
    random_state : None, int or RandomState
        Initial weights, mini-batch shuffling and the early-stopping split.
    tol, n_iter_no_change : float, int
        Stop when the loss (or, with early stopping, the validation score) has not improved
        by at least ``tol`` for more than ``n_iter_no_change`` consecutive epochs.
    verbose : bool
        Print the loss of every epoch.
    warm_start : bool
        ``fit`` continues from the fitted network and, while the training parameters are
        unchanged, the update rule's state (``partial_fit`` always continues).
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data (stratified for two classes, as in
        scikit-learn), stop on the validation accuracy and keep the best weights.
    validation_fraction : float in (0, 1), default 0.1
    target_loss : float, optional
        Stop as soon as the training loss (poswise's, without the penalty) is below it.
    dtype : float32 or float64, default float64
        The network's dtype.
    first_layer : {"auto", "primal", "dual", "direct"}, default "auto"
        How the trainer computes the first layer (see ``poswise.GradientDescent``).
    threads : int, optional
        Thread limit during training.

    Attributes
    ----------
    classes_, coefs_, intercepts_, loss_, best_loss_, loss_curve_, validation_scores_,
    best_validation_score_, n_iter_, n_layers_, n_outputs_, out_activation_,
    n_features_in_, feature_names_in_, t_
        As in scikit-learn; ``coefs_[l]`` is a view ``(n_in, n_out)`` of the network's
        weights.
    """

    _is_clf = True

    def _targets(self, y, first_pass, incremental):
        """Encoded labels, the poswise loss and the number of outputs."""
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        kind = type_of_target(y, input_name="y")
        multilabel = kind == "multilabel-indicator"
        if kind not in ("binary", "multiclass") and not multilabel:
            raise ValueError(f"Unknown label type: {kind!r}. MLPClassifier needs class "
                             f"labels (binary or multiclass, 1-D) or a multilabel "
                             f"indicator matrix of 0/1.")
        labels = unique_labels(y)
        if first_pass:
            if not incremental or multilabel:    # partial_fit's `classes` set classes_
                self.classes_ = labels
            self._multilabel = multilabel
        elif multilabel != self._multilabel:
            raise ValueError(f"y is {'' if multilabel else 'not '}a multilabel indicator "
                             f"matrix but the fitted network was trained on "
                             f"{'multilabel' if self._multilabel else 'class'} targets.")
        elif self.warm_start and not incremental:
            if set(labels) != set(self.classes_):
                raise ValueError(f"warm_start can only be used where `y` has the same "
                                 f"classes as in the previous call to fit. Previously got "
                                 f"{self.classes_}, `y` has {labels}")
        elif np.setdiff1d(labels, self.classes_).size:
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` "
                             f"has {self.classes_}. 'y' has {labels}.")
        n_classes = len(self.classes_)
        if multilabel:      # one sigmoid output per label, binary cross-entropy summed
            return np.asarray(y, dtype=np.float64), "bce", n_classes
        if n_classes < 2:
            raise ValueError(f"MLPClassifier needs samples of at least 2 classes; got 1 "
                             f"class ({self.classes_[0]!r}).")
        codes = np.searchsorted(self.classes_, y)
        if n_classes == 2:
            return codes.astype(np.float64), "bce", 1
        return codes, "cross_entropy", n_classes

    @property
    def _head(self):
        return "sigmoid" if self._multilabel or len(self.classes_) == 2 else "softmax"

    _loss_scale = 1.0

    def _labels(self, z):
        """Label codes from last-layer values: 0/1 columns (multilabel, binary) or argmax."""
        if self._multilabel:
            return (z > 0).astype(np.int64)
        return (z[:, 0] > 0).astype(np.intp) if z.shape[1] == 1 else np.argmax(z, axis=1)

    def _score_net(self, net, X, y):
        """Accuracy (subset accuracy for multilabel targets), as ``score``."""
        right = self._labels(net.decision_function(X)) == np.asarray(y).astype(np.int64)
        return float(np.mean(right.all(axis=1) if right.ndim == 2 else right))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train on ``X`` (n_samples, n_features) and class labels ``y``; return self.

        ``sample_weight`` (optional, >= 0) makes the loss the weighted mean: a sample of
        weight k counts as k copies of it."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on ``(X, y)``; ``classes`` (all the labels) on the first call."""
        if _check_partial_fit_first_call(self, classes):
            for attr in ("coefs_", "_net", "_run"):
                self.__dict__.pop(attr, None)
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes); for multilabel targets, the
        probability of each label."""
        z = self._forward(X)
        if self._multilabel:
            from .._numpy_backend import sigmoid
            return sigmoid(z)
        if z.shape[1] == 1:
            from .._numpy_backend import sigmoid
            p = sigmoid(z[:, 0])
            return np.column_stack([1 - p, p])
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each sample (an indicator matrix for multilabel
        targets)."""
        codes = self._labels(self._forward(X))
        return codes if self._multilabel else self.classes_[codes]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor trained by poswise (identity output, squared
    error; several outputs for a 2-D ``y``).

    Parameters and attributes are those of :class:`MLPClassifier` (early stopping scores
    the validation data with R^2). ``loss_`` is scikit-learn's ``0.5 * mean((y - f)^2)``
    over samples and outputs; the gradient is that of poswise's ``mse`` (summed over the
    outputs, scikit-learn's too).
    """

    _is_clf = False

    def _targets(self, y, first_pass, incremental):
        y = np.asarray(y)
        K = 1 if y.ndim == 1 else y.shape[1]
        self._loss_scale = float(K)
        return y.reshape(y.shape[0], K), "mse", K

    _head = "identity"

    def _score_net(self, net, X, y):
        from sklearn.metrics import r2_score
        return float(r2_score(y, net.decision_function(X)))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train on ``X`` (n_samples, n_features) and targets ``y``; return self.

        ``sample_weight`` (optional, >= 0) makes the loss the weighted mean: a sample of
        weight k counts as k copies of it."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch on ``(X, y)``, continuing from the fitted network."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X):
        """Predicted targets: (n_samples,) for one output, else (n_samples, n_outputs)."""
        z = self._forward(X)
        return z[:, 0] if z.shape[1] == 1 else z

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
