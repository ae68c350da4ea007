"""Config schema of the induction experiment (no torch: the CLI lists and checks it at once)."""

from __future__ import annotations

from dynamics.config import Key, Schema

from ..keys import CHECKPOINT_EVERY

LOSSES = ("ce", "logsoftmax")  # variants of the reduced loss: reduced_models.induction.LOSSES

INDUCTION = Schema((
    Key("vocab", "int", 3, "vocabulary size d", low=2, high=8),
    Key("L", "int", 100, "context length (training)", low=1),
    Key("parents", "ints", [1, 2], "parent offsets of the chain", low=1),
    Key("window", "int", 3, "copier window M (offsets 1..M)", low=1, high=6),
    Key("heads", "int", 3, "copier heads H (head h starts on offset h; H <= M unless "
        "shifted)", low=1),
    Key("degree", "int", 2, "largest candidate set |S| <= D", low=1),
    Key("empty_set", "bool", False, "authors' variant: the selector also has the empty set, "
        "a constant kernel term whose C^2 counts in |C|^2 (p starts at 1/(n_sets + 1))"),
    Key("shifted", "bool", False, "authors' variant: head h reads offsets h..h+window-1 "
        "(otherwise every head reads 1..window); simplified network only"),
    Key("alpha", "float", 0.1, "Dirichlet prior of each kernel row", low=0.0, low_open=True),
    Key("model", "str", "simplified", "'simplified': SGD trains the simplified network "
        "(trajectory sgd); 'full': also the full one (token-dependent Q, K, OV and LayerNorm in "
        "layer 1; trajectory full)", choices=("simplified", "full")),
    Key("qk_init", "float", 0.1, "full model: std of the initial Q and K entries", low=0.0),
    Key("loss", "str", "ce", "'ce' true cross-entropy, 'logsoftmax' the authors' variant",
        choices=LOSSES),
    Key("schedule", "str", "joint", "'joint': all parameters at once (lr, t_max); "
        "'sequential': selector, then copier, then classifier, each alone "
        "(lr_<stage>, t_<stage>)", choices=("joint", "sequential")),
    Key("lr", "float", 0.1, "SGD learning rate of the joint schedule; t = lr x step",
        low=0.0, low_open=True),
    Key("batch", "int", 512, "sequences per SGD step", low=1),
    Key("train_size", "int", 0, "0: fresh sequences every SGD step; N > 0: one fixed set of "
        "N sequences, each step's batch drawn from it uniformly with replacement", low=0),
    Key("full_batch", "bool", False, "authors' variant, with train_size > 0: every step is "
        "an exact gradient step on the whole fixed set (full-batch GD; batch is unused)"),
    Key("t_max", "float", 200.0, "joint schedule: gradient-flow time to reach; SGD steps = "
        "t_max / lr", low=0.0, low_open=True),
    Key("lr_selector", "float", 0.1, "sequential: learning rate of the selector stage (C)",
        low=0.0, low_open=True),
    Key("t_selector", "float", 5.0, "sequential: flow time of the selector stage",
        low=0.0, low_open=True),
    Key("lr_copier", "float", 100.0, "sequential: learning rate of the copier stage (layer 1)",
        low=0.0, low_open=True),
    Key("t_copier", "float", 20000.0, "sequential: flow time of the copier stage",
        low=0.0, low_open=True),
    Key("lr_classifier", "float", 1.0, "sequential: learning rate of the classifier stage (a)",
        low=0.0, low_open=True),
    Key("t_classifier", "float", 100.0, "sequential: flow time of the classifier stage",
        low=0.0, low_open=True),
    Key("corrected", "bool", True, "with flows and SGD: also the population flow with SGD's "
        "growth of |C| (trajectory corrected)"),
    Key("L_test", "ints", [10, 20, 50, 100, 200, 400, 700, 1000], "context lengths at which "
        "the trained networks are evaluated (group generalise)", low=1),
    Key("alpha_test", "floats", [0.05, 0.1, 0.2], "priors at which the trained networks are "
        "evaluated", low=0.0, low_open=True),
    Key("test_samples", "int", 2000, "sequences per (alpha, L) test point; 0: no evaluation",
        low=0),
    Key("samples", "int", 4000, "Monte-Carlo sequences of the population loss and the ode "
        "(also the SGD evaluation sample)", low=10),
    Key("mi_chains", "int", 2000, "kernels averaged for the chi-square MI", low=2),
    Key("w_plus", "float", 3.0, "initial copier logit on each head's own offset"),
    Key("w_minus", "float", 0.1, "initial copier logit on the other offsets"),
    Key("c_init", "float", 0.01, "initial selector amplitude C_S", low=0.0, low_open=True),
    Key("a_init", "float", 0.01, "initial classifier scale a"),
    Key("records", "int", 80, "log-spaced recording points", low=2, high=100_000),
    Key("rtol", "float", 1e-6, "ODE relative tolerance", low=0.0, low_open=True),
    Key("atol", "float", 1e-9, "ODE absolute tolerance", low=0.0, low_open=True),
    Key("seed", "int", 0, "random seed (samples, SGD batches, MI kernels)", low=0),
    CHECKPOINT_EVERY,
), name="InductionConfig")
InductionConfig = INDUCTION.config_class
