"""Config schemas of the sparse experiments (no torch: the CLI lists and checks them at once)."""

from __future__ import annotations

from dynamics.config import Key, Schema

from ..keys import CHECKPOINT_EVERY

SPARSE = Schema((
    Key("d", "int", 16, "covariate dimension", low=1),
    Key("s", "int", 3, "sparsity of beta (random support, N(0,1) values)", low=0),
    Key("sigma2", "float", 0.25, "label-noise variance of training", low=0.0),
    Key("format", "str", "interleaved", "tokens: 'interleaved' (x and y tokens, causal "
        "attention, loss at every x token) or 'concat' (one (x, y) token per example, loss "
        "at the query)", choices=("interleaved", "concat")),
    Key("n_min", "int", 8, "smallest training context length, uniform per step (concat)",
        low=1),
    Key("n_max", "int", 32, "largest training context length", low=1),
    Key("curriculum_d_start", "int", 0, "interleaved: train first with x zero beyond this "
        "many coordinates, one more every curriculum_interval steps (0: no curriculum)",
        low=0),
    Key("curriculum_n_start", "int", 0, "interleaved: train first with this many examples, "
        "two more every curriculum_interval steps (0: no curriculum)", low=0),
    Key("curriculum_interval", "int", 2000, "steps between curriculum increments", low=1),
    Key("n_test", "ints", [8, 16, 24, 32], "context lengths of the pruning comparison", low=1),
    Key("sigma2_test", "floats", [0.0, 0.25, 1.0], "noise levels of the pruning comparison",
        low=0.0),
    Key("network", "str", "standard", "network analysed: 'standard' (softmax, MLP, LayerNorm) "
        "or 'linear' (linear-attention stack, concat format)", choices=("standard", "linear")),
    Key("layers", "int", 3, "layers", low=2),
    Key("heads", "int", 4, "heads per layer", low=1),
    Key("width", "int", 32, "residual width of the standard network (divisible by heads)", low=1),
    Key("mlp_ratio", "int", 4, "MLP hidden width / width (standard network)", low=1),
    Key("init_std", "float", 0.02, "weight std of the linear stack at random init", low=0.0,
        low_open=True),
    Key("single_head", "bool", True, "also train the single-head network of the comparison"),
    Key("optimizer", "str", "adam", "optimiser of the analysed networks", choices=("adam", "sgd")),
    Key("net_lr", "float", 1e-3, "peak learning rate of the analysed networks", low=0.0,
        low_open=True),
    Key("lr_schedule", "str", "cosine", "'constant', or 'cosine': linear warm-up over the "
        "first 2% of steps, then cosine decay to 0", choices=("constant", "cosine")),
    Key("steps", "int", 2000, "training steps of the analysed networks", low=1),
    Key("batch", "int", 64, "prompts per step (fresh each step)", low=1),
    Key("eval_samples", "int", 2000, "fixed evaluation prompts per (n, noise) point", low=2),
    Key("probe_samples", "int", 400, "prompts to fit the probes (as many again to score)",
        low=2),
    Key("importance_floor", "float", 0.2, "layer 1 'all heads matter' when every normalised "
        "importance is >= this", low=0.0, high=1.0),
    Key("dominance", "float", 0.5, "a later layer has 'one dominant head' when every other "
        "normalised importance is <= this", low=0.0, high=1.0),
    Key("converged_ratio", "float", 1.5, "the network has converged when its risk at n_max is "
        "at most this times the tuned preprocess-then-optimize risk", low=1.0),
    Key("reference_trials", "int", 2000, "prompts of the preprocess-then-optimize reference "
        "(as many again to tune it); 0 skips it", low=0),
    Key("device", "str", "cpu", "torch device"),
    Key("seed", "int", 0, "random seed", low=0),
    CHECKPOINT_EVERY,
), name="SparseConfig")
SparseConfig = SPARSE.config_class

RISK = Schema((
    Key("d", "int", 20, "covariate dimension", low=1),
    Key("s", "int", 3, "sparsity: nonzero entries of beta (N(0,1) values)", low=0),
    Key("sigma2", "float", 0.25, "label-noise variance", low=0.0),
    Key("n_test", "ints", [10, 20, 40, 80], "context lengths n at which risks are measured",
        low=1),
    Key("k_steps", "int", 10, "GD steps of gd and every pto variant (the same number for all)",
        low=1),
    Key("heads", "int", 4, "layer-1 heads of pto_reduced (each owns the coordinates k with "
        "k mod heads = h; heads = d reweights every coordinate)", low=1),
    Key("trials", "int", 4000, "evaluation prompts per n (standard errors ~ 1/sqrt)", low=2),
    Key("tune_trials", "int", 1000, "separate prompts per n on which hyper-parameters are tuned",
        low=2),
    Key("device", "str", "cpu", "torch device of the estimators"),
    Key("seed", "int", 0, "random seed", low=0),
), name="SparseRiskConfig")
SparseRiskConfig = RISK.config_class


FLOW = Schema((
    Key("d", "int", 8, "covariate dimension", low=1),
    Key("s", "int", 3, "sparsity of beta (random support, N(0,1) values)", low=0),
    Key("sigma2", "float", 0.25, "label-noise variance", low=0.0),
    Key("layers", "int", 2, "layers of the linear stack (1 preprocessing, then GD steps)", low=2),
    Key("heads", "int", 1, "heads per layer (layer-1 head h owns the coordinates k mod H = h)",
        low=1),
    Key("lr", "float", 1e-3, "SGD learning rate of the linear stack; t = lr x step", low=0.0,
        low_open=True),
    Key("t_max", "float", 5.0, "gradient-flow time of the comparison", low=0.0, low_open=True),
    Key("records", "int", 40, "log-spaced records of the comparison", low=2),
    Key("n_flow", "int", 32, "context length of the comparison (at n = 2d the per-prompt "
        "gradient is heavier-tailed: SGD strays further from the flow)", low=1),
    Key("flow_batch", "int", 1024, "prompts per SGD step of the linear stack (SGD's spread "
        "about the flow scales as sqrt(lr / flow_batch))", low=1),
    Key("mc_samples", "int", 100000, "prompts of the Monte-Carlo population loss (the per-prompt "
        "loss is heavy-tailed: the flow moves by ~1/sqrt(mc_samples) with the sample)", low=2),
    Key("init_alpha", "float", 0.25, "start of every layer-1 scale alpha_h (alpha = 0 is "
        "stationary in alpha; SGD's kicks along the feature step grow as alpha^4)", low=0.0,
        low_open=True),
    Key("init_eta", "float", 0.02, "start of every step size (on x and on u)"),
    Key("kq_train", "str", "sign-symmetric", "KQ entries SGD trains: 'sign-symmetric' (each "
        "head's diagonal on x and its u-u block) or 'all'", choices=("sign-symmetric", "all")),
    Key("freeze_values", "bool", True, "keep the linear stack's OV at the lift (only KQ trains); "
        "the value maps are constants of the lift"),
    Key("kq_label_free", "bool", True, "with kq_train=all, hold the label row and column of KQ "
        "at 0 (the lift has none; free, they make SGD unstable at these lr)"),
    Key("rtol", "float", 1e-6, "ODE relative tolerance", low=0.0, low_open=True),
    Key("atol", "float", 1e-8, "ODE absolute tolerance", low=0.0, low_open=True),
    Key("device", "str", "cpu", "torch device"),
    Key("seed", "int", 0, "random seed", low=0),
), name="SparseFlowConfig")
SparseFlowConfig = FLOW.config_class


RATES = Schema((
    Key("d_list", "ints", [20, 40, 80], "covariate dimensions", low=1),
    Key("s", "int", 3, "sparsity: nonzero entries of beta (N(0,1) values), fixed over d", low=0),
    Key("sigma2", "float", 0.25, "label-noise variance", low=0.0),
    Key("n_test", "ints", [20, 40, 80, 160, 320, 640], "context lengths n", low=1),
    Key("k_steps", "int", 10, "GD steps of gd and every pto variant", low=1),
    Key("heads", "int", 4, "layer-1 heads of pto_reduced", low=1),
    Key("trials", "int", 500, "evaluation prompts per (d, n)", low=2),
    Key("tune_trials", "int", 200, "tuning prompts per (d, n)", low=2),
    Key("device", "str", "cpu", "torch device of the estimators"),
    Key("seed", "int", 0, "random seed", low=0),
), name="SparseRatesConfig")
SparseRatesConfig = RATES.config_class
