"""The compiled point function's disk cache: hit for the same graph, miss for a changed one."""

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest

from pymc_dilation import model as model_module
from pymc_dilation.model import compile_model_logp

pytestmark = pytest.mark.skipif(
    model_module.CACHED_SRC_FUNCTIONS is None, reason="PyTensor without a Numba disk cache"
)

X = np.linspace(-1.0, 1.0, 12)
Y = 1.3 * X + np.sin(7.0 * X)


def _sign_model(y=Y, prior_sd=2.0) -> pm.Model:
    """``y ~ N(|b| x, s)``: fused elementwise Ops, whose auto-generated names vary by process."""
    with pm.Model() as model:
        b = pm.Normal("b", 0.3, prior_sd)
        s = pm.HalfNormal("s", 1.0)
        pm.Normal("y", pm.math.abs(b) * X, s, observed=y)
    return model


def _reference(model, x: np.ndarray) -> tuple[float, np.ndarray]:
    point = {"b": x[0], "s_log__": x[1]}
    logp = model.compile_logp()(point)
    grad = model.compile_dlogp()(point)
    return float(logp), np.asarray(grad)


def _advance_name_counter() -> None:
    """Build and compile an unrelated graph, so fresh variables get other automatic names."""
    a = pt.vector("a")
    pm.pytensorf.compile([a], [pt.exp(a) * 2 + pt.abs(a) / 3])


def test_rebuilt_graph_loads_from_disk_cache():
    first = compile_model_logp(_sign_model())
    _advance_name_counter()
    second = compile_model_logp(_sign_model())
    assert first.cache_key is not None
    assert second.cache_key == first.cache_key
    assert sum(second.point_fn.dispatcher.stats.cache_hits.values()) >= 1


@pytest.mark.parametrize(
    "changed",
    [{"y": Y + 0.5}, {"prior_sd": 2.5}],
    ids=["observed data", "prior constant"],
)
def test_changed_constant_does_not_reuse_a_stale_function(changed):
    base_model, new_model = _sign_model(), _sign_model(**changed)
    base = compile_model_logp(base_model)
    new = compile_model_logp(new_model)
    assert new.cache_key != base.cache_key
    x = np.array([0.7, -0.2])
    for compiled, model in ((base, base_model), (new, new_model)):
        logp, grad = compiled.logp_grad(x, np.zeros(0))
        ref_logp, ref_grad = _reference(model, x)
        assert logp == pytest.approx(ref_logp, rel=1e-10)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-10)


def test_uncached_graph_is_compiled_afresh(monkeypatch):
    monkeypatch.setattr(model_module, "_pytensor_cache_key", lambda fn: None)
    model = _sign_model(prior_sd=3.0)
    compiled = compile_model_logp(model)
    assert compiled.cache_key is None
    x = np.array([-0.4, 0.1])
    assert compiled.logp_grad(x, np.zeros(0))[0] == pytest.approx(_reference(model, x)[0])


def _cholesky_model() -> pm.Model:
    """A potential whose Cholesky factorisation raises where ``|r| >= 1``."""
    with pm.Model() as model:
        r = pm.Normal("r", 0.0, 1.0)
        matrix = pt.stack([pt.stack([1.0, r]), pt.stack([r, 1.0])])
        chol = pt.linalg.cholesky(matrix, on_error="raise")
        pm.Potential("log_det", pt.log(pt.diag(chol)).sum())
    return model


def test_model_errors_reject_in_kernels_and_raise_from_python():
    compiled = compile_model_logp(_cholesky_model())
    assert isinstance(compiled.point_fn, model_module.PointFunctionAddress)
    lps, grads = compiled.logp_grad_batch(np.array([[0.3], [2.0]]), np.zeros(0))
    assert np.isfinite(lps[0]) and np.isfinite(grads[0]).all()
    assert np.isnan(lps[1]) and np.isnan(grads[1]).all()
    with pytest.raises(np.linalg.LinAlgError):
        compiled.logp_grad(np.array([2.0]), np.zeros(0))
