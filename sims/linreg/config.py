"""Config schemas of the linreg experiments (no torch: the CLI lists and checks them at once)."""

from __future__ import annotations

from dynamics.config import Key, Schema

from ..keys import CHECKPOINT_EVERY

COVARIANCES = ("identity", "toeplitz")  # covariance of x: sims.linreg.task.covariance_matrix
NORMALISATIONS = ("sum", "mean")  # of linear attention: sims.linreg.linear_attention

LINREG = Schema((
    Key("d", "int", 5, "covariate dimension", low=1),
    Key("L", "int", 40, "context length (training)", low=1),
    Key("sigma2", "float", 0.1, "label-noise variance", low=0.0),
    Key("heads", "int", 2, "attention heads H", low=1),
    Key("covariance", "str", "identity", "covariance of x: 'identity' or 'toeplitz' "
        "(Sigma_ij = rho^|i-j|; needs param = merged)", choices=COVARIANCES),
    Key("rho", "float", 0.5, "Toeplitz correlation, |rho| < 1", low=-1.0, high=1.0),
    Key("init", "str", "symmetric", "start: 'symmetric' (+-init_scale alternating by head, "
        "lifted) or 'random' (network weights N(0, init_scale^2))",
        choices=("symmetric", "random")),
    Key("init_scale", "float", 0.05, "start scale (omega = mu = +-init_scale when symmetric)",
        low=0.0, low_open=True),
    Key("ode_start", "str", "init", "where the reduced flows start: 'init' (the start point) or "
        "'pattern' (the network's (omega, mu) when the pattern has formed)",
        choices=("init", "pattern")),
    Key("pattern_threshold", "float", 0.95, "the pattern has formed when every active head has "
        "KQ diagonal ratio and OV last-entry ratio above this", low=0.0, high=1.0, low_open=True),
    Key("active_fraction", "float", 0.1, "a head is active when |mu_h| >= active_fraction x "
        "max_h |mu_h|", low=0.0, high=1.0),
    Key("param", "str", "merged", "network parameterisation", choices=("merged", "factored")),
    Key("metric", "str", "lift", "metric of the symbolic flow ode: 'lift' G = J^T J, the flow "
        "SGD follows; 'unit' G = I, d(omega, mu)/dt = -grad Lt (the paper's ODE; param = "
        "merged)", choices=("lift", "unit")),
    Key("optimizer", "str", "sgd", "full-network optimiser", choices=("sgd", "adam")),
    Key("lr", "float", 0.02, "learning rate; t = lr x step", low=0.0, low_open=True),
    Key("batch", "int", 512, "SGD minibatch size (fresh samples each step)", low=1),
    Key("t_max", "float", 20.0, "gradient-flow time to reach; SGD steps = t_max / lr",
        low=0.0, low_open=True),
    Key("mc_samples", "int", 8000, "covariate draws of the population loss", low=1),
    Key("eval_samples", "int", 4096, "fixed prompts on which the network's recorded loss "
        "is measured", low=1),
    Key("records", "int", 150, "log-spaced recording points", low=2, high=100_000),
    Key("rtol", "float", 1e-7, "ODE relative tolerance", low=0.0, low_open=True),
    Key("population_rtol", "float", 1e-4, "relative tolerance of the Monte-Carlo population "
        "flow (its sampling error, ~0.5% of the state at 8000 draws, dwarfs the ~1e-4 "
        "integration error)", low=0.0, low_open=True),
    Key("atol", "float", 1e-9, "ODE absolute tolerance", low=0.0, low_open=True),
    Key("sgd_dtype", "str", "float64", "network dtype", choices=("float32", "float64")),
    Key("device", "str", "cpu", "torch device of the network and the flows ('cpu', 'cuda', ...)"),
    Key("seed", "int", 0, "random seed (sampling, init, Monte-Carlo sample)", low=0),
    CHECKPOINT_EVERY,
), name="LinregConfig")
LinregConfig = LINREG.config_class

RISK = Schema((
    Key("d", "int", 5, "covariate dimension", low=1),
    Key("sigma2", "float", 0.1, "label-noise variance", low=0.0),
    Key("L_test", "ints", [10, 20, 40, 60, 80, 100], "test context lengths (>= 2)", low=2),
    Key("omega", "floats", [0.13, -0.13], "multihead: key-query scale per head"),
    Key("mu", "floats", [3.45, -3.45], "multihead: label weight per head (as many as omega)"),
    Key("single_head_L", "int", 40, "single_head_fixed: the length whose large-L optimum the "
        "single head keeps at every L", low=1, high=1_000_000),
    Key("network", "str", None, "FILE.h5:RUN_ID (or FILE.h5: its newest run) of a stored linreg "
        "run; its network's final (omega, mu) projection is evaluated as estimator 'network'"),
    Key("samples", "int", 100_000, "prompts per test length, shared by all estimators", low=2),
    Key("seed", "int", 0, "random seed of the prompts", low=0),
), name="LinregRiskConfig")
LinregRiskConfig = RISK.config_class

LENGTH = Schema((
    Key("d", "int", 5, "covariate dimension", low=1),
    Key("L", "int", 40, "training context length", low=2),
    Key("sigma2", "float", 0.1, "label-noise variance", low=0.0),
    Key("heads", "ints", [1, 2, 4, 8], "heads H of the softmax networks (one network each)", low=1),
    Key("linear", "bool", True, "also train the linear-attention baseline"),
    Key("linear_heads", "int", 1, "heads of the linear-attention baseline", low=1),
    Key("linear_norm", "str", "sum", "linear attention's normalisation: 'sum' over the context "
        "or 'mean' (divided by L)", choices=NORMALISATIONS),
    Key("param", "str", "merged", "network parameterisation", choices=("merged", "factored")),
    Key("init", "str", "symmetric", "start: 'symmetric' (lift of omega = mu = +-init_scale, "
        "alternating by head) or 'random' (weights N(0, init_scale^2))",
        choices=("symmetric", "random")),
    Key("init_scale", "float", 0.05, "start scale", low=0.0, low_open=True),
    Key("optimizer", "str", "adam", "optimiser", choices=("sgd", "adam")),
    Key("lr", "float", 0.003, "learning rate; t = lr x step", low=0.0, low_open=True),
    Key("steps", "int", 2000, "optimiser steps per network", low=1, high=10_000_000),
    Key("batch", "int", 256, "minibatch size (fresh prompts each step)", low=1),
    Key("records", "int", 40, "log-spaced recording points of training", low=2, high=100_000),
    Key("eval_samples", "int", 4096, "fixed prompts at L on which the training loss is recorded",
        low=1),
    Key("L_test", "ints", [10, 20, 40, 60, 80, 100, 150, 200], "test context lengths", low=2),
    Key("samples", "int", 20000, "prompts per test length, shared by all networks", low=2),
    Key("sgd_dtype", "str", "float64", "network dtype", choices=("float32", "float64")),
    Key("device", "str", "cpu", "torch device of the networks ('cpu', 'cuda', ...)"),
    Key("seed", "int", 0, "random seed (starts, minibatches, evaluation prompts)", low=0),
    CHECKPOINT_EVERY,
), name="LinregLengthConfig")
LinregLengthConfig = LENGTH.config_class

MULTITASK = Schema((
    Key("d", "int", 6, "covariate dimension", low=1),
    Key("L", "int", 48, "context length", low=1),
    Key("sigma2", "float", 0.1, "label-noise variance of every task", low=0.0),
    Key("tasks", "int", 2, "number of tasks N", low=1, high=64),
    Key("supports", "str", "auto", "coordinates (0-based) each task reads: tasks separated "
        "by ';', coordinates by ',', inclusive ranges a-b; 'auto' chains N blocks overlapping "
        "by half (d=6, N=2: 0-3;2-5)"),
    Key("heads", "int", 4, "attention heads H", low=1),
    Key("init_scale", "float", 0.5, "network weights start N(0, init_scale^2)",
        low=0.0, low_open=True),
    Key("optimizer", "str", "adam", "optimiser", choices=("sgd", "adam")),
    Key("lr", "float", 1e-3, "learning rate; t = lr x step", low=0.0, low_open=True),
    Key("batch", "int", 256, "minibatch size (fresh samples each step)", low=1),
    Key("t_max", "float", 10.0, "time to reach (lr x steps)", low=0.0, low_open=True),
    Key("eval_samples", "int", 2048, "fixed prompts on which the recorded loss is measured",
        low=1),
    Key("records", "int", 60, "log-spaced recording points", low=2, high=100_000),
    Key("active_fraction", "float", 0.1, "head h serves task k when its strength "
        "|omega_hk mu_hk| >= active_fraction x the strongest head's on task k",
        low=0.0, high=1.0),
    Key("sgd_dtype", "str", "float32", "network dtype", choices=("float32", "float64")),
    Key("device", "str", "cpu", "torch device ('cpu', 'cuda', ...)"),
    Key("seed", "int", 0, "random seed (init, sampling)", low=0),
    CHECKPOINT_EVERY,
), name="MultitaskConfig")
MultitaskConfig = MULTITASK.config_class
