"""Single-layer linear attention on in-context linear regression, as a reduced model.

Run it with the engine (docs/user-models.md):

    icldyn run docs/examples/linear_attention.py
    icldyn check docs/examples/linear_attention.py
    icldyn sweep docs/examples/linear_attention.py --grid L=10,20,40,80

Task: x_1..x_L, x_q ~ N(0, I_d), beta ~ N(0, I_d / d), y = beta.x + eps with
eps ~ N(0, sigma2) (the query label noisy too); tokens z_l = (x_l, y_l), query
z_q = (x_q, 0).

Network: one linear-attention head, averaged over the context,

    y_hat = OV . (1/L) sum_l z_l (z_l^T KQ z_q),   KQ (d+1, d+1), OV (d+1,).

Reduced model: KQ = gamma diag(I_d, 0), OV = v e_(d+1). There the network is one
step of gradient descent from zero with step eta = gamma v:
y_hat = eta (1/L) sum_l y_l x_l.x_q. The lift fills d entries with gamma and one
with v, so the metric is G = diag(d, 1).

Loss: the population MSE E (y_hat - y_q)^2 (no factor 1/2) in closed form. With
S = (1/L) sum_l x_l x_l^T, E tr S = d and E tr S^2 = d (1 + (d+1)/L), so

    Loss(eta) = 1 + sigma2 - 2 eta + a eta^2,   a = 1 + (d + 1 + sigma2 d) / L,

minimal at eta* = 1/a, where Loss = 1 + sigma2 - 1/a.

Flow: d(gamma, v)/dt = -G^-1 grad Loss, the path full-batch gradient descent on
(KQ, OV) with step lr follows at t = lr x step. It conserves d gamma^2 - v^2; from
a balanced start (v = sqrt(d) gamma > 0) eta obeys the logistic equation
d eta/dt = k eta (1 - a eta), k = 4 / sqrt(d), so

    eta(t) = eta* / (1 + (eta* / eta_0 - 1) exp(-k t)).

Its stationary points are the origin (a saddle, flow eigenvalues +-2/sqrt(d)) and
the hyperbola gamma v = 1/a (minima); on the balanced branch the flow eigenvalues
are -4/sqrt(d) (across the hyperbola) and 0 (along it).
"""

import math

import numpy as np

from reduced_models import Manifold, Param, ReducedModel, SymbolicLoss

NAME = "linear-attention"
DESCRIPTION = "one linear-attention head on in-context linear regression (gamma, v flow)"
HYPER = {"d": 5, "L": 40.0, "sigma2": 0.1, "gamma0": 0.02}
RUN = {"t_max": 20.0}


def reduced_model(hyper: dict) -> ReducedModel:
    """The (gamma, v) model in dimension d; L and sigma2 are given at run time."""
    d = hyper["d"]
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")

    def lift(s):
        """State symbols {gamma: (), v: ()} -> weights KQ (d+1, d+1), OV (d+1,)."""
        kq = np.zeros((d + 1, d + 1), dtype=object)
        for i in range(d):
            kq[i, i] = s["gamma"][()]
        ov = np.zeros(d + 1, dtype=object)
        ov[d] = s["v"][()]
        return {"KQ": kq, "OV": ov}

    def observables(s):
        gamma, v = s["gamma"][()], s["v"][()]
        return {"gamma": gamma, "v": v, "eta": gamma * v}

    def loss(obs, h):
        eta = obs["eta"][()]
        a = 1 + (d + 1 + h["sigma2"] * d) / h["L"]
        return 1 + h["sigma2"] - 2 * eta + a * eta**2

    manifold = Manifold([Param("gamma", (), "KQ = gamma diag(I_d, 0)"),
                         Param("v", (), "OV = v e_(d+1)")], lift)
    return ReducedModel(manifold, observables,
                        SymbolicLoss(loss, "closed-form population MSE of one linear-attention "
                                           "head (eta = gamma v)"),
                        hyper=("L", "sigma2"))


def start(hyper: dict) -> dict:
    """Balanced start: gamma = gamma0, v = sqrt(d) gamma0."""
    return {"gamma": hyper["gamma0"], "v": math.sqrt(hyper["d"]) * hyper["gamma0"]}


def limit(hyper: dict) -> dict:
    """Closed forms at the stationary point the balanced flow reaches."""
    d, L, sigma2 = hyper["d"], hyper["L"], hyper["sigma2"]
    a = 1 + (d + 1 + sigma2 * d) / L
    return {"eta": 1 / a, "loss": 1 + sigma2 - 1 / a,
            "flow_eigenvalues": [-4 / math.sqrt(d), 0.0]}
