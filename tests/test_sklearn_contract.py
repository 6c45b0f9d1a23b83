"""scikit-learn's estimator contract for `VAEDetector`: every check of `parametrize_with_checks`,
with no expected failure. Two checks skip themselves here, as the README says: array-API
input (needs SCIPY_ARRAY_API=1 and an array-API library) and pandas input (pandas is not a
dependency; polars frames go through the feature schema instead)."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from pipeline.build.detector import VAEDetector

SMALL = VAEDetector(epochs=2, members=1, hidden=[8], latent=2)  # the contract, not the model, is tested


@parametrize_with_checks([SMALL])
def test_scikit_learn_estimator_contract(estimator, check) -> None:  # noqa: ANN001 - scikit-learn's fixtures
    check(estimator)
