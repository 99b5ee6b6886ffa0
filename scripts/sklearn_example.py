"""The examples of docs/sklearn.md: `PYTHONPATH=src python scripts/sklearn_example.py`."""
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from poswise.sklearn import MLPClassifier

# A pipeline with a scaler, as with scikit-learn's MLPClassifier
X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
model = make_pipeline(StandardScaler(), MLPClassifier((20, 7, 5), random_state=0))
model.fit(X_train, y_train)
print("breast cancer test accuracy:", round(model.score(X_test, y_test), 4))
net = model[-1]
print("epochs:", net.n_iter_, " final loss:", round(net.loss_, 4),
      " coefs_ shapes:", [c.shape for c in net.coefs_])

# A grid search over the schedule and the learning rate, two jobs in parallel
X, y = load_digits(return_X_y=True)
pipe = Pipeline([("scale", StandardScaler()),
                 ("net", MLPClassifier((64,), max_iter=300, random_state=0,
                                       threads=1))])   # one thread per job
grid = GridSearchCV(pipe, {"net__schedule": ["pwo", "gd"],
                           "net__learning_rate_init": [0.03, 0.1, 0.3]},
                    cv=5, n_jobs=2)
grid.fit(X, y)
print("best:", grid.best_params_, round(grid.best_score_, 4))
for params, score in zip(grid.cv_results_["params"], grid.cv_results_["mean_test_score"]):
    print(f"  {params['net__schedule']:>3}  lr={params['net__learning_rate_init']:<5} {score:.4f}")

# 5-fold cross-validation
scores = cross_val_score(make_pipeline(StandardScaler(), MLPClassifier((64,), random_state=0)),
                         X, y, cv=5)
print("digits 5-fold accuracy:", scores.round(4), round(scores.mean(), 4))
