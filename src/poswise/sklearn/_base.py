"""What poswise's scikit-learn estimators share: parameters, training, attributes."""
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from .. import trainers as _trainers
from .._layout import check_widths
from ..network import ACTIVATIONS, MLP
from ..updates import UPDATE_RULES, UpdateRule, from_hyper, get_update

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - scikit-learn 1.3 to 1.5
    def _validate_data(est, *args, **kwargs):
        return est._validate_data(*args, **kwargs)

#: scikit-learn's activation names and poswise's own, each with poswise's name.
ACTIVATION_NAMES = {**{a: a for a in ACTIVATIONS}, "logistic": "sigmoid"}

#: Schedule name -> trainer class (the trainers' registry).
SCHEDULES = _trainers.SCHEDULES

# scikit-learn's batch_size="auto"
AUTO_BATCH = 200

#: learning_rate_init=None by update-rule family: full-batch steps of the SGD rules can be
#: large; the adaptive rules take scikit-learn's (and torch.optim's) 0.001. Measured with 5
#: folds on digits and breast cancer (docs/sklearn.md).
DEFAULT_LEARNING_RATES = {"sgd": 0.1, "adam": 0.001, "adamw": 0.001, "rmsprop": 0.001}


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, training, attributes."""

    _parameter_constraints = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATION_NAMES))],
        "schedule": [StrOptions(set(SCHEDULES))],
        "update": [StrOptions(set(UPDATE_RULES)), UpdateRule],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left"),
                       None],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "target_loss": [Interval(Real, None, None, closed="neither"), None],
        "dtype": [Options(type, {np.float32, np.float64}),
                  StrOptions({"float32", "float64"})],
        "first_layer": [StrOptions(set(_trainers.FIRST_LAYER_MODES))],
        "threads": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, schedule="pwo",
                 update="sgd", alpha=0.0001, batch_size=None, learning_rate_init=None,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, target_loss=None, dtype=np.float64,
                 first_layer="auto", threads=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.schedule = schedule
        self.update = update
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.target_loss = target_loss
        self.dtype = dtype
        self.first_layer = first_layer
        self.threads = threads

    # ------------------------------------------------------------------ network
    def _linked(self, net):
        """Whether ``coefs_``/``intercepts_`` are still the views of ``net`` set by fit
        (a user may have replaced them)."""
        ws, bs = net.weights, net.biases
        return (len(self.coefs_) == len(ws) and len(self.intercepts_) == len(bs)
                and all(c.base is w for c, w in zip(self.coefs_, ws))
                and all(i is b for i, b in zip(self.intercepts_, bs)))

    def _network(self, store):
        """The fitted network, rebuilt from ``coefs_``/``intercepts_`` when they are not
        its views (after unpickling, or if the user replaced them). With ``store`` the
        rebuilt network is kept and the attributes become its views again."""
        net = self.__dict__.get("_net")
        if net is not None and self._linked(net):
            return net
        net = MLP.from_arrays([np.asarray(c).T for c in self.coefs_], self.intercepts_,
                              activation=ACTIVATION_NAMES[self._activation],
                              output=self._head)
        if net.dtype != self._dtype:
            net = MLP.from_arrays([w.astype(self._dtype) for w in net.weights],
                                  [b.astype(self._dtype) for b in net.biases],
                                  activation=net.activation, output=net.output)
        if store:
            self._attach(net)
            self.__dict__.pop("_run", None)
        return net

    def _attach(self, net):
        self._net = net
        self.coefs_ = [w.T for w in net.weights]
        self.intercepts_ = list(net.biases)

    def __getstate__(self):
        # the network and the training session are rebuilt from coefs_/intercepts_
        state = dict(super().__getstate__())
        state.pop("_net", None)
        state.pop("_run", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "coefs_" in self.__dict__:
            self._network(store=True)

    def _forward(self, X):
        """Last-layer values of the fitted network for ``X``."""
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return self._network(store=False).decision_function(X)

    # ------------------------------------------------------------------ training
    def _rule(self, n_batch):
        """The update rule with ``alpha`` as weight decay (``alpha / n_batch``: the
        gradient of scikit-learn's penalty ``alpha / (2 n) ||W||^2``)."""
        rule = get_update(self.update, type(self).__name__)
        if not self.alpha:
            return rule
        hyper = rule.hyper()
        if hyper["weight_decay"] == 0:      # scikit-learn's penalty spares the biases
            hyper["decay_biases"] = False
        hyper["weight_decay"] += self.alpha / n_batch
        return from_hyper(rule.family, hyper)

    def _session(self, net, loss, n_batch, N, rs):
        """The training session of this call: the previous one (the update rule's state
        goes on) while the schedule, learning rate, loss and rule family are unchanged,
        else a new one. Batch size and weight decay may change from call to call
        (partial_fit on batches of other sizes)."""
        rule = self._rule(n_batch or N)
        lr = self.learning_rate_init
        lr = float(DEFAULT_LEARNING_RATES[rule.family] if lr is None else lr)
        hyper = dict(rule.hyper(), weight_decay=None)
        key = (self.schedule, lr, loss, rule.family,
               sorted(hyper.items()), self.first_layer, self.threads, self.shuffle)
        prev = self.__dict__.get("_run")
        if prev is not None and prev[0] == key and prev[1].net is net:
            sess = prev[1]
            sess.trainer.update, sess.trainer.batch_size = rule, n_batch
            return sess
        gen = np.random.PCG64(rs.randint(np.iinfo(np.int32).max))
        trainer = SCHEDULES[self.schedule](
            lr, loss=loss, batch_size=n_batch, update=rule,
            first_layer=self.first_layer, threads=self.threads,
            shuffle=bool(self.shuffle), rng=np.random.Generator(gen))
        sess = trainer.session(net)
        self._run = (key, sess)
        return sess

    def _fit(self, X, y, incremental, sample_weight=None):
        first_pass = (not hasattr(self, "coefs_")
                      or (not self.warm_start and not incremental))
        hidden = check_widths(self.hidden_layer_sizes, "hidden_layer_sizes",
                              type(self).__name__)
        X, y = _validate_data(self, X, y, reset=first_pass, multi_output=True,
                              dtype=(np.float64, np.float32), y_numeric=not self._is_clf)
        y, loss, K = self._targets(y, first_pass, incremental)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        self._random_state = rs = check_random_state(self.random_state)
        if first_pass:
            self._dtype = np.dtype(self.dtype).type
            sizes = (X.shape[1],) + hidden + (K,)
            net = MLP(sizes, activation=ACTIVATION_NAMES[self.activation],
                      init="xavier_uniform", dtype=self._dtype,
                      rng=rs.randint(np.iinfo(np.int32).max))
            net.output = self._head
            self._activation = self.activation
            self._attach(net)
            self.__dict__.pop("_run", None)
            self.n_iter_ = self.t_ = 0
            self.n_layers_, self.n_outputs_ = len(sizes), K
            self.out_activation_ = {"sigmoid": "logistic"}.get(self._head, self._head)
            self.loss_curve_ = []
            self._no_improvement_count = 0
            self.best_loss_ = None if self.early_stopping else np.inf
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_validation_score_ = -np.inf if self.early_stopping else None
        elif K != self.n_outputs_:
            raise ValueError(f"y has {K} output(s) but the fitted network has "
                             f"{self.n_outputs_}; refit without warm_start.")
        net = self._network(store=True)
        self._train(net, X, y, loss, rs, incremental, sample_weight)
        return self

    def _train(self, net, X, y, loss, rs, incremental, sw=None):
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        Xv = yv = None
        if self.early_stopping:
            # scikit-learn stratifies single-output (binary) classification only
            stratify = y if self._is_clf and self.n_outputs_ == 1 else None
            parts = train_test_split(X, y, *([] if sw is None else [sw]), random_state=rs,
                                     stratify=stratify, test_size=self.validation_fraction)
            X, Xv, y, yv = parts[:4]
            sw = parts[4] if sw is not None else None
            if Xv.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
        N = X.shape[0]
        # with sample weights, a sample counts w times: the penalty's n is their sum
        n_eff = N if sw is None else float(np.sum(sw))
        n_batch = None
        if self.batch_size is not None:
            n_batch = min(AUTO_BATCH if self.batch_size == "auto" else self.batch_size, N)
            n_batch = None if n_batch == N else n_batch
        fit = self._session(net, loss, n_batch, n_eff, rs).fit
        best = None
        self.n_iter_ = 0
        stopped = False

        def each_epoch(epoch, hist):
            nonlocal best, stopped
            if epoch == 0:
                return False
            self.loss_ = self._penalised(net, hist.loss[-1], n_batch or n_eff)
            self.loss_curve_.append(self.loss_)
            self.n_iter_ += 1
            self.t_ += N
            if self.verbose:
                print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
            if self.early_stopping:
                score = self._score_net(net, Xv, yv)
                self.validation_scores_.append(score)
                if self.verbose:
                    print("Validation score: %f" % score)
                better = score >= self.best_validation_score_ + self.tol
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best = ([w.copy() for w in net.weights], [b.copy() for b in net.biases])
            else:
                better = self.loss_ <= self.best_loss_ - self.tol
                self.best_loss_ = min(self.best_loss_, self.loss_)
            self._no_improvement_count = 0 if better else self._no_improvement_count + 1
            if self._no_improvement_count > self.n_iter_no_change and not incremental:
                stopped = True
                if self.verbose:
                    what = "Validation score" if self.early_stopping else "Training loss"
                    print(f"{what} did not improve more than tol={self.tol:f} for "
                          f"{self.n_iter_no_change} consecutive epochs. Stopping.")
                return True
            return False

        hist = fit(X, y, epochs=1 if incremental else self.max_iter,
                   target_loss=self.target_loss, callbacks=(each_epoch,), sample_weight=sw)
        if best is not None:
            for dst, src in zip(net.weights + net.biases, best[0] + best[1]):
                np.copyto(dst, src)
        if not self.loss_curve_:     # diverged in the first epoch, or target met at once
            self.loss_ = self._penalised(net, hist.loss[-1], n_batch or n_eff)
        if (not incremental and not stopped and self.n_iter_ == self.max_iter
                and hist.stopped_reason == "max_epochs"):
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                          f"reached and the optimization hasn't converged yet.",
                          ConvergenceWarning)

    def _penalised(self, net, data_loss, n_batch):
        """The loss in scikit-learn's definition: data loss + alpha/(2 n) ||W||^2."""
        value = data_loss / self._loss_scale
        if self.alpha:
            value += 0.5 * self.alpha * sum(float(np.vdot(w, w)) for w in net.weights) \
                / n_batch
        return float(value)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multilabel": self._is_clf, "multioutput": not self._is_clf}
