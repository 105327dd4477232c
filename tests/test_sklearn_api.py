"""TinyVisionClassifier: scikit-learn's estimator checks, cross-validation and grid search on Digits,
parameters that round-trip through clone, seeds, and the image shapes it reads from X."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from tinyvision.config import RunConfig
from tinyvision.errors import ConfigError, SpecError
from tinyvision.sklearn_api import NOT_PARAMS, TinyVisionClassifier, infer_image_shape

from usermodels import BNNet, DropNet

# No check is expected to fail: none is skipped here. scikit-learn skips check_array_api_input itself
# unless SCIPY_ARRAY_API=1 is set (with it, the numpy namespace passes as well).
EXPECTED_FAILED: dict[str, str] = {}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return load_digits(return_X_y=True)  # (1797, 64) floats 0..16, labels 0..9


@parametrize_with_checks([TinyVisionClassifier(threads=1)], expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_scikit_learn_estimator_checks(estimator, check) -> None:
    check(estimator)


def test_cross_val_score_on_digits(digits) -> None:
    X, y = digits
    scores = cross_val_score(TinyVisionClassifier(epochs=20, threads=1), X, y, cv=3)
    assert scores.mean() >= 0.90, scores


def test_grid_search_over_lr(digits) -> None:
    X, y = digits
    search = GridSearchCV(TinyVisionClassifier(epochs=3, threads=1), {"lr": [1e-3, 1e-2]}, cv=2).fit(X, y)
    assert search.best_params_["lr"] in (1e-3, 1e-2)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.best_estimator_.lr == search.best_params_["lr"] and search.best_estimator_.score(X, y) > 0.5


def test_predict_proba_rows_sum_to_one_in_the_order_of_classes(digits) -> None:
    X, y = digits
    labels = np.array(list("abcdefghij"))[y]  # any labels: strings here
    est = TinyVisionClassifier(epochs=2, threads=1).fit(X[:600], labels[:600])
    probs = est.predict_proba(X[600:700])
    assert probs.shape == (100, 10) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert list(est.classes_) == list("abcdefghij")
    assert (est.predict(X[600:700]) == est.classes_[probs.argmax(axis=1)]).all()


def test_params_are_the_config_fields_and_clone_keeps_them() -> None:
    params = TinyVisionClassifier().get_params()
    assert set(params) == {"model", "image_shape", "random_state"} | (set(RunConfig.model_fields) - set(NOT_PARAMS))
    assert params["lr"] == RunConfig().lr and params["epochs"] == RunConfig().epochs and params["val_size"] is None
    est = TinyVisionClassifier(BNNet, model_args={"width": 4}, lr=0.01, epochs=2, random_state=3)
    copy = clone(est)
    assert copy is not est and copy.get_params() == est.get_params()
    copy.set_params(lr=0.1, model="digits-cnn")
    assert copy.lr == 0.1 and copy.model == "digits-cnn" and est.lr == 0.01
    assert "lr=0.01" in repr(est)
    with pytest.raises(ConfigError, match="no parameter 'epoch'; did you mean 'epochs'"):
        TinyVisionClassifier(epoch=3)


def test_random_state_is_the_seed(digits) -> None:
    X, y = digits
    X, y = X[:400], y[:400]

    def probs(seed):
        return TinyVisionClassifier(epochs=2, threads=1, random_state=seed).fit(X, y).predict_proba(X[:50])

    np.testing.assert_array_equal(probs(1), probs(1))
    assert not np.array_equal(probs(1), probs(2))


def test_image_shapes_from_x(digits) -> None:
    X, y = digits
    assert infer_image_shape(64) == (1, 8, 8) and infer_image_shape(784) == (1, 28, 28)
    assert infer_image_shape(3072) == (3, 32, 32) and infer_image_shape(10) == (1, 1, 10)
    flat = TinyVisionClassifier(epochs=1, threads=1).fit(X[:300], y[:300])
    images = X.reshape(-1, 8, 8)
    cnn = TinyVisionClassifier(BNNet, model_args={"width": 4}, epochs=1, threads=1).fit(images[:300], y[:300])
    channels = TinyVisionClassifier(epochs=1, threads=1).fit(images[:300, None], y[:300])
    assert flat.image_shape_ == cnn.image_shape_ == channels.image_shape_ == (1, 8, 8)
    assert cnn.predict_proba(images[:5]).shape == (5, 10)  # X in the layout fit took (n_features_in_)
    with pytest.raises(ConfigError, match=r"X holds images of shape \(1, 4, 16\); fitted on \(1, 8, 8\)"):
        channels.predict(X[:5].reshape(5, 1, 4, 16))
    with pytest.raises(SpecError, match="1x1x10 input"):  # a CNN on a flat row: give image_shape
        TinyVisionClassifier("digits-cnn", threads=1).fit(X[:50, :10], y[:50])
    assert TinyVisionClassifier(epochs=1, threads=1, image_shape=(1, 4, 16)).fit(X[:50], y[:50]).image_shape_ == \
        (1, 4, 16)


def test_early_stopping_needs_a_validation_split_carved_from_x(digits) -> None:
    X, y = digits
    with pytest.raises(ConfigError, match="give val_size"):
        TinyVisionClassifier(patience=2, threads=1).fit(X, y)
    est = TinyVisionClassifier(epochs=200, patience=2, val_size=0.2, lr=0.01, threads=1).fit(X[:500], y[:500])
    assert len(est.history_) < 200 and est.history_[-1]["epoch"] == len(est.history_)


def test_a_module_instance_is_copied_not_trained_in_place(digits) -> None:
    X, y = digits
    net = DropNet((1, 8, 8), 10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    est = TinyVisionClassifier(net, epochs=2, threads=1).fit(X[:300], y[:300])
    assert all((before[k] == v).all() for k, v in net.state_dict().items())
    assert est.module_ is not net and any((before[k] != v).any() for k, v in est.module_.state_dict().items())
