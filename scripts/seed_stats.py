"""Statistics over seeds shared by the results scripts (transfer-tables.py, asha-table.py).
Standard library only."""
import math
import random


def mean(xs):
    return sum(xs) / len(xs)


def sd(xs):
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def bootstrap(xs, draws=10000, seed=0):
    """95% percentile interval of the mean of xs, resampling seeds."""
    rng = random.Random(seed)
    means = sorted(mean([rng.choice(xs) for _ in xs]) for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]
