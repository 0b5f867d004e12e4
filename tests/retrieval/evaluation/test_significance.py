from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from retrieval.evaluation import paired_test


def test_paired_tests():
    rng = np.random.default_rng(0)
    a = rng.random(60)
    better = a + 0.2 + rng.normal(0, 0.05, 60)
    assert paired_test(a, a) == 1.0
    assert paired_test(a, better) < 1e-6
    assert paired_test(a, better) == pytest.approx(stats.ttest_rel(better, a).pvalue)
    assert paired_test(a, better, "randomization") < 0.01
    assert paired_test(a, better, "randomization") == paired_test(a, better, "randomization")
    noise = a + np.tile([0.1, -0.1], 30)
    assert paired_test(a, noise) > 0.9
    assert paired_test(a, noise, "randomization") > 0.9
    with pytest.raises(ValueError, match="unknown test"):
        paired_test(a, better, "wilcoxon")
    with pytest.raises(ValueError, match="equal length"):
        paired_test(a, better[:5])
