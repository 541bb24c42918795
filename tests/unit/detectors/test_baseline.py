"""Baseline construction, persistence, compare() and thresholds."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from driftline.detectors import (
    METRICS,
    Baseline,
    Histogram,
    psi_critical_value,
    validate_thresholds,
)

pytestmark = pytest.mark.unit


def test_quantile_edges_and_wallaroo_bin_layout() -> None:
    b = Baseline.from_values(np.arange(101.0))
    assert b.edges.tolist() == pytest.approx([0.0, 20.0, 40.0, 60.0, 80.0, 100.0])
    assert b.edges.tolist() == np.quantile(np.arange(101.0), np.linspace(0, 1, 6)).tolist()
    assert b.num_bins == 7  # 5 quantile bins + left and right outlier bins
    assert b.counts.tolist() == [0, 21, 20, 20, 20, 20, 0]
    assert b.count == 101


def test_equal_provided_open_modes() -> None:
    values = np.array([0.0, 1.0, 2.0, 9.0, 10.0])
    eq = Baseline.from_values(values, bins="equal", num_bins=2)
    assert eq.edges.tolist() == [0.0, 5.0, 10.0]
    assert eq.counts.tolist() == [0, 3, 2, 0]
    prov = Baseline.from_values(values, bins="provided", edges=[1.0, 5.0], outliers="open")
    assert prov.num_bins == 1
    prov2 = Baseline.from_values(values, bins="provided", edges=[1.0, 5.0, 20.0], outliers="open")
    assert prov2.counts.tolist() == [3, 2]
    explicit = Baseline.from_values(values, bins="provided", edges=[1.0, 5.0])
    assert explicit.counts.tolist() == [1, 2, 2]


def test_duplicate_quantile_edges_on_discrete_data_are_merged() -> None:
    values = np.repeat([0.0, 1.0, 2.0], [800, 100, 100])
    b = Baseline.from_values(values, num_bins=5)
    assert b.edges.tolist() == sorted(set(b.edges.tolist()))  # no empty duplicate bins
    assert b.counts.sum() == 1000
    assert np.all(b.counts[1:-1] > 0)
    constant = Baseline.from_values(np.full(50, 3.0))
    assert constant.edges.tolist() == [3.0, 3.0]
    assert constant.compare([3.0, 3.0], "psi", {"alert": 0.1}).score == 0.0
    assert constant.compare([2.0, 4.0], "psi", {"alert": 0.1}).status == "alert"


def test_nan_in_baseline_counts_leftmost_and_is_ignored_for_edges() -> None:
    b = Baseline.from_values([np.nan, 1.0, 2.0, 3.0, 4.0], num_bins=2)
    assert b.edges.tolist() == [1.0, 2.5, 4.0]
    assert b.counts.tolist() == [1, 2, 2, 0]
    assert not np.isnan(b.sample).any()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"bins": "kmeans"}, "bins"),
        ({"num_bins": 0}, "num_bins"),
        ({"outliers": "closed"}, "outliers"),
        ({"bins": "provided"}, "edges"),
        ({"bins": "provided", "edges": [2.0, 1.0]}, "edges"),
        ({"edges": [1.0, 2.0]}, "edges"),
        ({"fine_bins": 0}, "fine_bins"),
        ({"sample_size": 0}, "sample_size"),
    ],
)
def test_invalid_arguments_name_the_parameter(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Baseline.from_values([1.0, 2.0, 3.0], **kwargs)  # type: ignore[arg-type]


def test_empty_or_all_nan_baseline_rejected() -> None:
    with pytest.raises(ValueError, match="values"):
        Baseline.from_values([])
    with pytest.raises(ValueError, match="values"):
        Baseline.from_values([np.nan, np.nan])


def test_json_and_pickle_round_trip() -> None:
    rng = np.random.default_rng(0)
    b = Baseline.from_values(rng.exponential(size=3000), num_bins=8, fine_bins=50)
    data = json.loads(json.dumps(b.to_json()))
    again = Baseline.from_json(data)
    assert again == b
    assert pickle.loads(pickle.dumps(b)) == b
    window = rng.exponential(1.2, size=400)
    for metric in METRICS:
        assert again.compare(window, metric) == b.compare(window, metric)
    with pytest.raises(ValueError, match="format"):
        Baseline.from_json({**data, "format": 99})


def test_sample_is_bounded_and_seeded() -> None:
    values = np.random.default_rng(1).normal(size=5000)
    a = Baseline.from_values(values, sample_size=500, seed=3)
    b = Baseline.from_values(values, sample_size=500, seed=3)
    c = Baseline.from_values(values, sample_size=500, seed=4)
    assert a.sample.size == 500
    assert np.array_equal(a.sample, b.sample)
    assert not np.array_equal(a.sample, c.sample)
    assert a.count == 5000


def test_compare_rejects_foreign_histogram_empty_window_and_bad_metric() -> None:
    b = Baseline.from_values(np.arange(100.0))
    with pytest.raises(ValueError, match="fine grid"):
        b.compare(Histogram.from_values([1.0], [0.0, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        b.compare(np.array([]))
    with pytest.raises(ValueError, match="metric"):
        b.compare([1.0], metric="kl")
    with pytest.raises(ValueError, match="raw values"):
        b.compare(b.histogram([1.0, 2.0]), metric="mmd")
    with pytest.raises(ValueError, match="fine_counts"):
        b.coarsen([1, 2, 3])


def test_histogram_from_counts_round_trip() -> None:
    b = Baseline.from_values(np.arange(100.0))
    h = b.histogram([5.0, 50.0, 500.0])
    assert b.histogram_from_counts(h.counts.tolist()) == h
    assert (
        b.fine_index([5.0, 50.0, 500.0]).tolist()
        == np.repeat(np.arange(b.num_fine_bins), h.counts).tolist()
    )


def test_result_fields_and_to_dict() -> None:
    b = Baseline.from_values(np.arange(100.0))
    r = b.compare(np.arange(50.0), "psi", {"warning": 0.1, "alert": 0.25})
    d = r.to_dict()
    assert set(d) >= {
        "metric",
        "score",
        "p_value",
        "status",
        "thresholds",
        "edges",
        "baseline_densities",
        "window_densities",
        "window_count",
        "baseline_count",
    }
    assert d["edges"] == b.edges.tolist()
    assert sum(d["window_densities"]) == pytest.approx(1.0)
    json.dumps(d)
    with pytest.raises(AttributeError):
        r.score = 1.0  # type: ignore[misc]


# -- thresholds ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "thresholds", "message"),
    [
        ("psi", {"warning": 0.3, "alert": 0.2}, "warning"),
        ("psi", {}, "non-empty"),
        ("psi", {"alert": -1.0}, "alert"),
        ("psi", {"alert": float("nan")}, "alert"),
        ("psi", {"alpha": 0.01}, "p-value metrics"),
        ("psi", {"auto": 1.5}, "auto"),
        ("psi", {"auto": 0.01, "alert": 0.2}, "mix"),
        ("psi", {"alert": "high"}, "alert"),
        ("psi", {"critical": 0.3}, "unknown"),
        ("ks", {"alpha": 0.05, "warning_alpha": 0.01}, "warning_alpha"),
        ("ks", {"warning_alpha": 0.01}, "alpha"),
        ("nope", {"alert": 0.1}, "metric"),
    ],
)
def test_validate_thresholds_rejects(
    metric: str, thresholds: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        validate_thresholds(metric, thresholds)


def test_status_rules() -> None:
    b = Baseline.from_values(np.arange(1000.0))
    window = np.arange(0.0, 500.0)  # half the range: clearly different
    score = b.compare(window, "psi", {"alert": 100.0}).score
    assert b.compare(window, "psi", {"alert": score}).status == "alert"  # >= is alert
    assert b.compare(window, "psi", {"warning": score, "alert": score + 1}).status == "warning"
    assert b.compare(window, "psi", {"warning": score + 1}).status == "ok"
    r = b.compare(window, "ks", {"alpha": 0.01, "warning_alpha": 0.05})
    assert r.status == "alert" and r.p_value is not None and r.p_value <= 0.01
    r = b.compare(window, "ks", {"warning": 0.1, "alert": 0.9})  # on the statistic
    assert r.status == "warning"


def test_fixed_psi_cut_fires_on_small_stationary_windows_but_auto_does_not() -> None:
    rng = np.random.default_rng(12)
    base = Baseline.from_values(rng.normal(size=10_000))
    fixed = auto = 0
    windows = 300
    for _ in range(windows):
        h = base.histogram(rng.normal(size=100))
        fixed += base.compare(h, "psi", {"alert": 0.1}).status == "alert"
        auto += base.compare(h, "psi", {"auto": 0.01}).status == "alert"
    assert fixed / windows > 0.05
    assert auto / windows <= 0.03


@pytest.mark.parametrize("n", [100, 1000, 5000])
@pytest.mark.parametrize("metric", ["psi", "maxdiff", "jensenshannon", "hellinger", "wasserstein"])
def test_auto_threshold_false_alarm_rate(n: int, metric: str) -> None:
    alpha = 0.05
    rng = np.random.default_rng(n + len(metric))
    alarms, windows = 0, 0
    for rep in range(6):
        base = Baseline.from_values(rng.normal(size=5000), seed=rep)
        for _ in range(40):
            r = base.compare(base.histogram(rng.normal(size=n)), metric, {"auto": alpha})
            alarms += r.status == "alert"
            windows += 1
    # 240 windows at 5 %: expect 12; allow sampling noise, catch a badly wrong calibration
    assert 2 <= alarms <= 27, alarms
    shifted = base.compare(base.histogram(rng.normal(0.5, 1, size=n)), metric, {"auto": alpha})
    assert shifted.status == "alert"


def test_psi_critical_value_scales_with_sizes_and_floor() -> None:
    b = np.array([0.0, 0.25, 0.25, 0.25, 0.25, 0.0])
    small = psi_critical_value(b, 100, 10_000, 0.01)
    large = psi_critical_value(b, 5000, 10_000, 0.01)
    assert large < small
    # without empty bins it is the scaled chi-square quantile
    inner = np.array([0.25, 0.25, 0.25, 0.25])
    from scipy import stats

    assert psi_critical_value(inner, 1000, 1000, 0.01) == pytest.approx(
        (1 / 1000 + 1 / 1000) * stats.chi2.isf(0.01, 3)
    )
    # empty outlier bins raise the cut: one stray value in a window of 5000 is not drift
    assert large > (1 / 5000 + 1 / 10_000) * stats.chi2.isf(0.01, 3)


def test_auto_thresholds_reported_and_cached() -> None:
    b = Baseline.from_values(np.random.default_rng(0).normal(size=2000))
    r = b.compare(np.random.default_rng(1).normal(size=300), "maxdiff", {"auto": 0.01})
    assert set(r.thresholds) == {"auto", "alert"}
    assert r.thresholds["alert"] == b.critical_value("maxdiff", 300, 0.01)
    r = b.compare(np.random.default_rng(1).normal(size=300), "ks", {"auto": 0.01})
    assert r.thresholds == {"auto": 0.01, "alpha": 0.01}
    with pytest.raises(ValueError, match="alpha"):
        b.critical_value("ks", 100, 0.01)
