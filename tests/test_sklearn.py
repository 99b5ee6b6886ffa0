"""poswise.sklearn: scikit-learn's estimator checks and the estimators' own contract."""
import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from poswise import Adam  # noqa: E402
from poswise.sklearn import SCHEDULES, MLPClassifier, MLPRegressor  # noqa: E402


@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------- helpers
def _quiet(fn, *args, **kwargs):
    """Call fn with scikit-learn's ConvergenceWarning silenced (short fits on purpose)."""
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


def _problem(kind, n=60, d=5, seed=0):
    from sklearn.datasets import (make_classification, make_multilabel_classification,
                                  make_regression)
    if kind == "multilabel":
        return make_multilabel_classification(n_samples=n, n_features=d, n_classes=3,
                                              random_state=seed)
    if kind == "regression":
        X, y = make_regression(n_samples=n, n_features=d, n_targets=2, noise=0.1,
                               random_state=seed)
        return X, y / np.abs(y).max()
    n_classes = 2 if kind == "binary" else 3
    return make_classification(n_samples=n, n_features=d, n_informative=3,
                               n_redundant=0, n_classes=n_classes, random_state=seed)


SK_FIXED = dict(hidden_layer_sizes=(7, 4), activation="tanh", alpha=0.0,
                learning_rate_init=0.05, max_iter=1, random_state=0, warm_start=True,
                n_iter_no_change=10 ** 6, tol=0.0)


# --------------------------------------------------------------------------- tests
def test_import_poswise_does_not_import_sklearn():
    code = "import sys, poswise; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# poswise update rule -> scikit-learn solver settings with the same steps. Adam's epsilon
# sits elsewhere (scikit-learn adds it to sqrt(v) before the bias correction, torch.optim
# and poswise after it), so both get a negligible one.
SK_SOLVERS = {
    "sgd": ("sgd", dict(solver="sgd", momentum=0.0)),
    "momentum": ("momentum", dict(solver="sgd", momentum=0.9, nesterovs_momentum=False)),
    "nesterov": ("nesterov", dict(solver="sgd", momentum=0.9, nesterovs_momentum=True)),
    "adam": (Adam(eps=1e-30), dict(solver="adam", epsilon=1e-30)),
}


def _twins(kind, update, X, alpha=0.0):
    """A fitted scikit-learn MLP (one epoch) and a poswise one holding the same weights."""
    from sklearn import neural_network as sknn
    ours_cls = MLPRegressor if kind == "regression" else MLPClassifier
    sk_cls = sknn.MLPRegressor if kind == "regression" else sknn.MLPClassifier
    fixed = dict(SK_FIXED, alpha=alpha)
    rule, solver = SK_SOLVERS[update]
    sk = sk_cls(batch_size=X.shape[0], shuffle=False, **solver, **fixed)
    ours = ours_cls(schedule="gd", update=rule, **fixed)
    return sk, ours


def _same_start(sk, ours, X, y, zero_intercepts=False):
    _quiet(sk.fit, X, y)
    _quiet(ours.fit, X, y)
    if zero_intercepts:
        for b in sk.intercepts_:
            b[:] = 0
    ours.coefs_ = [c.copy() for c in sk.coefs_]
    ours.intercepts_ = [b.copy() for b in sk.intercepts_]


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel", "regression"])
@pytest.mark.parametrize("update", list(SK_SOLVERS))
def test_gd_matches_sklearn_step_for_step(kind, update):
    """Full-batch GD is scikit-learn's solver with one batch and no shuffling: same
    losses, gradients and steps for plain SGD, momentum, Nesterov and Adam, the same loss
    definition and attributes."""
    X, y = _problem(kind)
    sk, ours = _twins(kind, update, X)
    _same_start(sk, ours, X, y)       # both start from scikit-learn's first epoch
    for est in (sk, ours):
        est.set_params(max_iter=15)
        _quiet(est.fit, X, y)
    rtol = 1e-9
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12)
    # scikit-learn records the loss before each epoch's step, poswise after it
    np.testing.assert_allclose(ours.loss_curve_[1:-1], sk.loss_curve_[2:], rtol=rtol)
    assert ours.t_ == sk.t_ and ours.n_iter_ == sk.n_iter_ == 15
    assert ours.n_layers_ == sk.n_layers_ and ours.n_outputs_ == sk.n_outputs_
    assert ours.out_activation_ == sk.out_activation_
    np.testing.assert_allclose(ours.predict(X), sk.predict(X), rtol=1e-6)
    if kind != "regression":
        np.testing.assert_array_equal(ours.classes_, sk.classes_)
        np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), rtol=1e-6)


@pytest.mark.parametrize("schedule", ["gd", "pwo"])
def test_minibatches_in_order_match_sklearn(schedule):
    """shuffle=False takes the mini-batches in data order, as scikit-learn does: with GD
    the weights follow scikit-learn's step for step (the last batch is partial); PWO takes
    other steps from the same start."""
    X, y = _problem("multiclass", n=70)
    sk, ours = _twins("multiclass", "momentum", X)
    sk.set_params(batch_size=16)
    ours.set_params(batch_size=16, shuffle=False, schedule=schedule)
    _same_start(sk, ours, X, y)
    for est in (sk, ours):
        _quiet(est.set_params(max_iter=4).fit, X, y)
    same = all(np.allclose(a, b, rtol=1e-9, atol=1e-12)
               for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_))
    assert same == (schedule == "gd")
    assert ours.t_ == sk.t_


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_alpha_is_sklearns_l2_gradient(kind):
    """alpha / n times the weights joins the gradient, as in scikit-learn. poswise also
    decays the biases, so the step is compared from zero biases (where that decay is 0)."""
    X, y = _problem(kind)
    sk, ours = _twins(kind, "sgd", X, alpha=0.7)
    _same_start(sk, ours, X, y, zero_intercepts=True)
    for est in (sk, ours):
        _quiet(est.fit, X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # a zero alpha gives other weights: the test can tell
    sk0, ours0 = _twins(kind, "sgd", X, alpha=0.0)
    _same_start(sk0, ours0, X, y, zero_intercepts=True)
    _quiet(ours0.fit, X, y)
    assert not np.allclose(ours0.coefs_[0], ours.coefs_[0], rtol=1e-9, atol=0)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("update", ["sgd", "adam"])
def test_estimator_runs_the_trainer(schedule, update):
    """From given weights, the estimator's network after k epochs is what the poswise
    trainer of its schedule makes of them in k epochs, with alpha / n as weight decay on the
    weight matrices."""
    import poswise
    from poswise.updates import get_update
    X, y = _problem("multiclass")
    lr, alpha = (0.1, 0.3) if update == "sgd" else (0.01, 0.3)
    est = MLPClassifier((6,), schedule=schedule, update=update, alpha=alpha,
                        learning_rate_init=lr, max_iter=1, random_state=3, warm_start=True,
                        n_iter_no_change=10 ** 6)
    _quiet(est.fit, X, y)
    start = poswise.MLP([5, 6, 3], rng=11)
    est.coefs_ = [w.T.copy() for w in start.weights]      # a new start: a new session
    est.intercepts_ = [b.copy() for b in start.biases]
    rule = get_update(update, weight_decay=alpha / X.shape[0], decay_biases=False)
    hist = SCHEDULES[schedule](lr, loss="cross_entropy", update=rule).fit(
        start, X, y, epochs=7)
    _quiet(est.set_params(max_iter=7).fit, X, y)
    for a, b in zip(est.coefs_ + est.intercepts_, [w.T for w in start.weights]
                    + list(start.biases)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    penalty = 0.5 * alpha * sum(np.sum(c ** 2) for c in est.coefs_) / X.shape[0]
    assert est.loss_ - penalty == pytest.approx(hist.loss[-1], rel=1e-10)
    assert len(est.loss_curve_) == 8 and est.n_iter_ == 7


def test_loss_is_sklearns_definition_with_penalty():
    """loss_ = mean log-loss (or 0.5 mean squared error over samples and outputs) +
    alpha / (2 n) * sum ||W||^2 on the fitted weights, computed here independently."""
    from sklearn.metrics import log_loss
    X, y = _problem("multiclass")
    clf = _quiet(MLPClassifier((5,), alpha=0.3, max_iter=20, random_state=0).fit, X, y)
    pen = 0.5 * 0.3 * sum(np.sum(c ** 2) for c in clf.coefs_) / X.shape[0]
    assert clf.loss_ == pytest.approx(log_loss(y, clf.predict_proba(X)) + pen, rel=1e-9)
    X, y = _problem("regression")
    reg = _quiet(MLPRegressor((5,), alpha=0.3, max_iter=20, random_state=0).fit, X, y)
    pen = 0.5 * 0.3 * sum(np.sum(c ** 2) for c in reg.coefs_) / X.shape[0]
    expect = 0.5 * np.mean((y - reg.predict(X)) ** 2) + pen
    assert reg.loss_ == pytest.approx(expect, rel=1e-9)
    assert reg.loss_curve_[-1] == reg.loss_


def test_attributes_and_predictions():
    X, y = _problem("multiclass")
    labels = np.array(["ant", "bee", "cat"])[y]
    clf = _quiet(MLPClassifier((8, 3), max_iter=30, random_state=0).fit, X, labels)
    assert list(clf.classes_) == ["ant", "bee", "cat"]
    assert [c.shape for c in clf.coefs_] == [(5, 8), (8, 3), (3, 3)]
    assert [b.shape for b in clf.intercepts_] == [(8,), (3,), (3,)]
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 3 and clf.out_activation_ == "softmax"
    assert clf.n_features_in_ == 5 and len(clf.loss_curve_) == clf.n_iter_
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert clf.best_loss_ == min(clf.loss_curve_)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
    assert np.array_equal(clf.predict(X), clf.classes_[np.argmax(proba, axis=1)])
    binary = _quiet(MLPClassifier((4,), max_iter=5, random_state=0).fit, X, y == 1)
    assert binary.out_activation_ == "logistic" and binary.n_outputs_ == 1
    assert binary.predict_proba(X).shape == (X.shape[0], 2)
    Xr, yr = _problem("regression")
    reg = _quiet(MLPRegressor((4,), max_iter=5, random_state=0).fit, Xr, yr)
    assert reg.predict(Xr).shape == yr.shape and reg.out_activation_ == "identity"
    one = _quiet(MLPRegressor((4,), max_iter=5, random_state=0).fit, Xr, yr[:, 0])
    assert one.predict(Xr).shape == (Xr.shape[0],)


def test_pickle_and_clone_round_trip():
    X, y = _problem("multiclass")
    clf = _quiet(MLPClassifier((6,), max_iter=20, random_state=0, warm_start=True).fit,
                 X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    for a, b in zip(back.coefs_, clf.coefs_):
        np.testing.assert_array_equal(a, b)
    # the unpickled estimator trains on, exactly as the original does
    _quiet(back.fit, X, y)
    _quiet(clf.fit, X, y)
    for a, b in zip(back.coefs_ + back.intercepts_, clf.coefs_ + clf.intercepts_):
        np.testing.assert_array_equal(a, b)
    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params()
    assert not hasattr(fresh, "coefs_")
    np.testing.assert_array_equal(_quiet(fresh.set_params(warm_start=False).fit, X, y)
                                  .predict(X),
                                  _quiet(clone(fresh).fit, X, y).predict(X))


@pytest.mark.parametrize("update", ["sgd", "adam"])
def test_partial_fit_and_warm_start_continue_training(update):
    """k partial_fit calls, or warm-started fits of a + b epochs, equal one fit of k
    epochs: the network and the update rule's state (Adam's moments) carry over."""
    X, y = _problem("multiclass")
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(X, y)
    kw = dict(update=update, learning_rate_init=0.1 if update == "sgd" else 0.01)
    inc = MLPClassifier((6,), alpha=0.0, random_state=0, **kw)
    for _ in range(5):
        inc.partial_fit(X, y, classes=[0, 1, 2])
    assert inc.n_iter_ == 1 and inc.t_ == 5 * X.shape[0] and len(inc.loss_curve_) == 5
    full = _quiet(MLPClassifier((6,), alpha=0.0, random_state=0, max_iter=5, **kw).fit,
                  X, y)
    for a, b in zip(inc.coefs_, full.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    warm = MLPClassifier((6,), alpha=0.0, random_state=0, max_iter=2, warm_start=True,
                         **kw)
    _quiet(warm.fit, X, y)
    _quiet(warm.set_params(max_iter=3).fit, X, y)
    for a, b in zip(warm.coefs_, full.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="classes not in"):
        inc.partial_fit(X, np.where(y == 2, 7, y))
    with pytest.raises(ValueError, match="same classes"):
        warm.fit(X, np.where(y == 2, 7, y))


def test_early_stopping_keeps_the_best_validation_weights():
    X, y = _problem("binary", n=200)
    clf = _quiet(MLPClassifier((8,), early_stopping=True, n_iter_no_change=3,
                               max_iter=300, learning_rate_init=0.5, random_state=0).fit,
                 X, y)
    assert clf.best_loss_ is None
    assert len(clf.validation_scores_) == clf.n_iter_ < 300
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    reg = _quiet(MLPRegressor((8,), early_stopping=True, max_iter=50,
                              random_state=0).fit, *_problem("regression", n=100))
    assert reg.best_validation_score_ == max(reg.validation_scores_)
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1])


def test_clear_errors():
    from sklearn.utils._param_validation import InvalidParameterError
    X, y = _problem("binary")
    with pytest.raises(InvalidParameterError, match="'schedule' parameter of MLPClassifier"):
        MLPClassifier(schedule="adam").fit(X, y)
    with pytest.raises(InvalidParameterError, match="'update' parameter of MLPRegressor"):
        MLPRegressor(update="lbfgs").fit(X, y)
    with pytest.raises(InvalidParameterError, match="'activation'"):
        MLPClassifier(activation="softplus").fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(3, 0)).fit(X, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier().fit(X, np.column_stack([y, 2 * y]))     # multiclass-multioutput
    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier().fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="sample_weight"):
        MLPClassifier().fit(X, y, sample_weight=np.ones(len(y) + 1))


@pytest.mark.parametrize("est", ["clf", "reg"])
def test_integer_sample_weights_equal_duplicated_samples(est):
    """Full batch, weight k = k copies (scikit-learn's own equivalence), alpha included."""
    X, y = _problem("multiclass" if est == "clf" else "regression")
    rng = np.random.default_rng(0)
    w = rng.integers(0, 3, len(y)).astype(float)
    w[:3] = 1
    idx = np.repeat(np.arange(len(y)), w.astype(int))
    cls = MLPClassifier if est == "clf" else MLPRegressor
    kw = dict(hidden_layer_sizes=(5,), max_iter=15, random_state=0, alpha=0.01,
              n_iter_no_change=10 ** 6)
    a = _quiet(cls(**kw).fit, X, y, sample_weight=w)
    b = _quiet(cls(**kw).fit, X[idx], np.asarray(y)[idx])
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)
    assert a.loss_ == pytest.approx(b.loss_, rel=1e-9)


def test_minibatches_verbose_and_activation_names(capsys):
    X, y = _problem("binary")
    clf = _quiet(MLPClassifier((4,), activation="logistic", batch_size="auto", max_iter=3,
                               verbose=True, random_state=0).fit, X, y)
    out = capsys.readouterr().out
    assert out.count("Iteration") == 3 and "loss =" in out
    assert clf.n_iter_ == 3


def test_grid_search_over_a_pipeline():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = _problem("multiclass", n=90)
    pipe = Pipeline([("scale", StandardScaler()),
                     ("net", MLPClassifier((8,), max_iter=30, random_state=0))])
    grid = {"net__schedule": ["pwo", "gd"], "net__learning_rate_init": [0.05, 0.2]}
    search = _quiet(GridSearchCV(pipe, grid, cv=3, n_jobs=2).fit, X, y)
    assert set(search.best_params_) == set(grid)
    pred = search.best_estimator_.predict(X)
    assert pred.shape == y.shape and np.mean(pred == y) > 0.6


@pytest.mark.parametrize("update", ["sgd", "momentum", "adam", "rmsprop"])
def test_default_learning_rate_follows_the_rule(update):
    from poswise.sklearn import DEFAULT_LEARNING_RATES
    from poswise.updates import get_update
    X, y = _problem("binary")
    lr = DEFAULT_LEARNING_RATES[get_update(update).family]
    assert lr == (0.1 if update in ("sgd", "momentum") else 0.001)
    fits = [_quiet(MLPClassifier((4,), update=update, max_iter=5, random_state=0,
                                 learning_rate_init=rate).fit, X, y)
            for rate in (None, lr, 10 * lr)]
    np.testing.assert_array_equal(fits[0].coefs_[0], fits[1].coefs_[0])
    assert not np.allclose(fits[0].coefs_[0], fits[2].coefs_[0])
