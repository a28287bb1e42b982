import math

import pytest


def test_lr_search_extends_the_grid_until_the_best_is_inside():
    from helpers.optim import lr_search

    calls = []

    def score(lr):  # best at 0.01
        calls.append(lr)
        return {"val": -abs(math.log10(lr) + 2)}

    best, trials = lr_search(score, [1e-4, 3e-4, 1e-3], key="val", extend=5, factor=10**0.5)
    assert math.isclose(best, 1e-2, rel_tol=1e-6) and len(calls) == 6
    assert list(trials) == sorted(trials) and max(trials) > best  # the best is inside
    best, trials = lr_search(lambda lr: {"loss": (lr - 3e-4) ** 2}, [1e-4, 3e-4, 1e-3], key="loss",
                             maximize=False)  # fmt: skip
    assert best == 3e-4 and len(trials) == 3  # already inside: nothing added
    with pytest.raises(ValueError, match="at least 3"):
        lr_search(score, [1e-3, 1e-2], key="val")
