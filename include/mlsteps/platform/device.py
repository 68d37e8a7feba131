"""The device a step trains on: checked, never a silent fall-back from GPU to CPU."""

from __future__ import annotations

import json

from mlsteps.contract.settings import REQUIRE_GPU_ENV_VAR
from mlsteps.errors import StepError


def resolve_device(requested: str, require_gpu: bool = False) -> str:
    """Check the requested device is really usable; never fall back silently.

    Args:
        requested: ``cpu`` or ``cuda``.
        require_gpu: The step runs on the GPU profile (``$ML_REQUIRE_GPU``), so ``cpu`` is refused.

    Returns:
        The device to train on.

    Raises:
        StepError: ``cuda`` was asked for (or ``$ML_REQUIRE_GPU`` is 1) but XGBoost cannot use a GPU.
    """
    if require_gpu and requested != "cuda":
        raise StepError(
            f"{REQUIRE_GPU_ENV_VAR}=1 (the GPU profile) but --device is {requested}; pass --device cuda "
            "or run the step on the cpu profile"
        )
    if requested == "cpu":
        return "cpu"
    problem = cuda_problem()
    if problem:
        raise StepError(
            f"--device cuda was requested but {problem}; run on a GPU node (profile gpu) or use --device cpu"
        )
    return "cuda"


def cuda_problem() -> str | None:
    """Why XGBoost cannot train on CUDA here, or None when it can.

    XGBoost silently switches to CPU when it finds no GPU, so this trains a two-row booster and
    reads back the device it really used.
    """
    import warnings

    import numpy as np
    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA"):
        return "this XGBoost build has no CUDA support"
    data = xgb.DMatrix(np.array([[0.0], [1.0]]), label=np.array([0.0, 1.0]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            booster = xgb.train({"device": "cuda", "tree_method": "hist", "verbosity": 0}, data, 1)
    except xgb.core.XGBoostError as err:
        return f"XGBoost could not start on CUDA ({str(err).splitlines()[0][:160]})"
    used = json.loads(booster.save_config())["learner"]["generic_param"]["device"]
    if not str(used).startswith("cuda"):
        return "no usable GPU is visible to XGBoost (it would have switched to CPU)"
    return None
