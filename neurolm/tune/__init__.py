"""Ray Tune searches. :mod:`neurolm.tune.mixing`: Optuna + ASHA over the stage-3 task mixing weights;
:mod:`neurolm.tune.search`: its Ray-free parts (space → weights, objectives, trial sizing, the best config).

Nothing is imported here, so ``import neurolm.tune.search`` does not import Ray.
"""
