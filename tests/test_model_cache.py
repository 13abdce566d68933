"""The compiled point function's disk cache: hit for the same graph, miss for a changed one."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from pymc_dilation import graph_cache
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


def test_rebuilt_graph_loads_from_disk_cache(monkeypatch):
    # PyTensor's key of the rewritten graph (the pre-rewrite key is tested below).
    monkeypatch.setattr(model_module, "graph_key", lambda *args: None)
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
    monkeypatch.setattr(model_module, "graph_key", lambda *args: None)
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


# ---------------------------------------------------------------- the pre-rewrite graph key


def _shared_data_model() -> pm.Model:
    """A model whose data stays a shared variable: its value may change, so no key."""
    with pm.Model() as model:
        data = pytensor.shared(Y)
        b = pm.Normal("b", 0.0, 1.0)
        pm.Potential("fit", -0.5 * pt.sum((data - b * X) ** 2))
    return model


def _key(model) -> str | None:
    compiled = compile_model_logp(model)
    return graph_cache.graph_key(compiled._inputs, [compiled._logp_graph], "test")


def test_graph_key_is_the_same_for_a_rebuilt_model_and_differs_for_a_changed_one():
    base = _key(_sign_model())
    _advance_name_counter()
    assert _key(_sign_model()) == base
    assert _key(_sign_model(y=Y + 1e-12)) != base  # data
    assert _key(_sign_model(prior_sd=2.0 + 1e-12)) != base  # a prior's constant
    with pm.Model() as other_op:  # the same wiring with another distribution
        b = pm.StudentT("b", nu=3.0, mu=0.3, sigma=2.0)
        s = pm.HalfNormal("s", 1.0)
        pm.Normal("y", pm.math.abs(b) * X, s, observed=Y)
    assert _key(other_op) != base
    assert _key(_shared_data_model()) is None


def test_compiled_graph_is_loaded_without_rewriting(monkeypatch):
    model = _sign_model(prior_sd=1.7)
    first = compile_model_logp(model)
    assert first.cache_key is not None
    graph_cache._memory.clear()  # as in a fresh process: only the disk remembers

    def no_rewrites(self):
        raise AssertionError("the graph was rewritten and compiled again")

    monkeypatch.setattr(model_module.ModelLogp, "_compile_numba", no_rewrites)
    loaded = compile_model_logp(model)
    assert loaded.cache_key == first.cache_key
    x = np.array([0.4, -0.3])
    logp, grad = loaded.logp_grad(x, np.zeros(0))
    ref_logp, ref_grad = _reference(model, x)
    assert logp == pytest.approx(ref_logp, rel=1e-10)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10)
    lps, _ = loaded.logp_grad_batch(np.stack([x, -x]), np.zeros(0))
    assert lps[1] == pytest.approx(_reference(model, -x)[0], rel=1e-10)


def test_changed_wrapper_source_is_not_loaded_stale(monkeypatch):
    model = _sign_model(prior_sd=2.2)
    compiled = compile_model_logp(model)
    inputs, graph = compiled._inputs, [compiled._logp_graph]
    before = graph_cache.graph_key(inputs, graph, model_module._key_mode())
    changed = model_module._POINT_WRAPPER_SRC + "\n# a changed wrapper\n"
    monkeypatch.setattr(model_module, "_POINT_WRAPPER_SRC", changed)
    assert graph_cache.graph_key(inputs, graph, model_module._key_mode()) != before
    graph_cache._memory.clear()
    fresh = compile_model_logp(model)
    assert fresh.cache_key != compiled.cache_key  # compiled from the changed source
    x = np.array([0.2, 0.1])
    assert fresh.logp_grad(x, np.zeros(0))[0] == pytest.approx(_reference(model, x)[0])


def test_loaded_function_still_raises_the_models_error():
    compile_model_logp(_cholesky_model())
    graph_cache._memory.clear()
    loaded = compile_model_logp(_cholesky_model())
    assert np.isnan(loaded.logp_grad_batch(np.array([[2.0]]), np.zeros(0))[0][0])
    with pytest.raises(np.linalg.LinAlgError):
        loaded.logp_grad(np.array([2.0]), np.zeros(0))


def test_stale_disk_entry_is_compiled_afresh():
    model = _sign_model(prior_sd=1.9)
    compile_model_logp(model)
    compiled = compile_model_logp(model)
    key = graph_cache.graph_key(compiled._inputs, [compiled._logp_graph], model_module._key_mode())
    graph_cache._memory.clear()
    graph_cache._path(key).write_text("pymc_dilation_point_no_such_function")
    fresh = compile_model_logp(model)
    x = np.array([-0.6, 0.2])
    assert fresh.logp_grad(x, np.zeros(0))[0] == pytest.approx(_reference(model, x)[0])
    assert graph_cache._path(key).read_text() == fresh.cache_key  # repaired


def test_a_gradient_with_digamma_is_cached_and_exact():
    # A StudentT's nu, a Gamma's shape: the gradient holds digamma, whose PyTensor 2 Numba
    # lowering (a SciPy function pointer) could not be cached, so every new process compiled
    # such a model afresh. Cached now, with the same log density and gradient as PyMC's.
    from scipy import special

    from pymc_dilation._compat import _digamma

    xs = np.concatenate([np.geomspace(1e-6, 1e4, 200), -np.linspace(0.01, 9.99, 200) - 0.003])
    np.testing.assert_allclose([_digamma(x) for x in xs], special.psi(xs), rtol=1e-12, atol=1e-13)
    assert np.isnan(_digamma(0.0)) and np.isnan(_digamma(-3.0))

    with pm.Model() as model:
        nu = pm.Gamma("nu", 2.0, 0.1)
        shape = pm.Exponential("shape", 1.0)
        pm.StudentT("y", nu=nu, observed=Y)
        pm.Gamma("z", alpha=shape, beta=1.0, observed=np.abs(Y) + 0.1)
    _advance_name_counter()
    compiled = compile_model_logp(model)
    assert compiled.cache_key is not None
    x = np.array([0.7, -0.2])
    logp, grad = compiled.logp_grad(x, np.zeros(0))
    point = {"nu_log__": x[0], "shape_log__": x[1]}
    # PyTensor's own Numba lowering calls SciPy's digamma (its C one is accurate to ~1e-10)
    reference = model.compile_dlogp(mode="NUMBA")(point)
    assert logp == pytest.approx(float(model.compile_logp()(point)), rel=1e-10)
    np.testing.assert_allclose(grad, reference, rtol=1e-13)
