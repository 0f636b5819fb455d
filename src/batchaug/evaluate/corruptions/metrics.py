"""Summaries of a table ``error[corruption][severity]`` (fractions): uCE, CE, mCE, relative mCE.

Definitions of Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (ICLR 2019), Sec. 3, with E the top-1 error, f the model and c a
corruption:

- ``CE_c = sum_s E(f, c, s) / sum_s E(AlexNet, c, s)``; ``mCE`` = the mean of CE over the 15
  benchmark corruptions;
- ``relative CE_c = sum_s (E(f, c, s) - E_clean(f)) / sum_s (E(AlexNet, c, s) - E_clean(AlexNet))``;
  ``relative mCE`` = its mean over the 15;
- ``uCE`` (un-normalized corruption error, as Merchant et al. 2020 report CIFAR-10-C in their
  Table 5): the mean of E over the 15 corruptions x 5 severities.

AlexNet's errors are ImageNet-C's: they normalize ImageNet-sized models only. On CIFAR or Tiny
ImageNet sizes CE, mCE and relative mCE are reported as null (Merchant et al. report CIFAR-10-C
un-normalized, ImageNet-C normalized). The four extra corruptions have no published AlexNet
reference here and always get a null CE.
"""

from __future__ import annotations

from collections.abc import Mapping

from batchaug.errors import ConfigError

from .names import BENCHMARK_CORRUPTIONS, CORRUPTIONS

__all__ = ["ALEXNET_CLEAN_ERROR", "ALEXNET_ERRORS", "SEVERITIES", "corruption_metrics"]

SEVERITIES = (1, 2, 3, 4, 5)

#: AlexNet's ImageNet-C top-1 error per corruption, averaged over the 5 severities (fractions).
#: Hendrycks & Dietterich (2019), the mCE spreadsheet linked from github.com/hendrycks/robustness
#: (README, "Calculating the mCE"); these six-digit values as in google-research/augmix
#: ``imagenet.py`` (``ALEXNET_ERR``, "Raw AlexNet errors taken from hendrycks/robustness").
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056, "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}

#: AlexNet's clean ImageNet top-1 error, for relative mCE: 43.5 % in Hendrycks & Dietterich (2019);
#: 0.4345 is the unrounded value that circulates with the spreadsheet's errors (a documented choice:
#: the two differ by 0.05 points, which moves relative CE by about 0.1 %).
ALEXNET_CLEAN_ERROR = 0.4345


def _table(errors: Mapping[str, Mapping[object, float]]) -> dict[str, dict[int, float]]:
    if not isinstance(errors, Mapping):
        raise ConfigError(f"errors must be a mapping corruption -> {{severity: error}}, got {type(errors).__name__}")
    table: dict[str, dict[int, float]] = {}
    for name, row in errors.items():
        if name not in CORRUPTIONS:
            raise ConfigError(f"errors: unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
        if not isinstance(row, Mapping):
            raise ConfigError(f"errors[{name!r}] must map severity -> error, got {type(row).__name__}")
        table[name] = {}
        for s, e in row.items():
            try:
                sev = int(s)  # type: ignore[call-overload]
            except (TypeError, ValueError):
                sev = 0
            if sev not in SEVERITIES or str(s) != str(sev):
                raise ConfigError(f"errors[{name!r}]: severity {s!r} is not one of 1, 2, 3, 4, 5")
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 <= float(e) <= 1.0:
                raise ConfigError(f"errors[{name!r}][{s!r}] must be an error fraction in [0, 1], got {e!r}")
            table[name][sev] = float(e)
    return table


def _mean_error(row: dict[int, float]) -> float | None:
    return sum(row[s] for s in SEVERITIES) / len(SEVERITIES) if all(s in row for s in SEVERITIES) else None


def corruption_metrics(errors: Mapping[str, Mapping[object, float]], clean_error: float | None = None, *,
                       alexnet: bool = False) -> dict[str, object]:
    """uCE, CE, mCE and relative mCE of an error table.

    Args:
        errors: ``{corruption: {severity: error}}``, severities 1-5 (ints or their strings), errors
            as fractions in [0, 1]; any subset of :data:`CORRUPTIONS`.
        clean_error: the model's error on the clean images (needed for relative mCE).
        alexnet: normalize by AlexNet's ImageNet-C errors (ImageNet-sized images only).

    Returns:
        ``{"error": {c: {"1": e1, ..., "5": e5}}, "uCE", "CE": {c: ce}, "mCE", "relative_CE": {c: rce},
        "relative_mCE", "clean_error"}``. ``uCE`` needs all 15 x 5 benchmark errors, ``mCE`` and
        ``relative_mCE`` all 15 CEs (and ``clean_error``); what cannot be computed is None.
    """
    table = _table(errors)
    if clean_error is not None and (isinstance(clean_error, bool) or not isinstance(clean_error, (int, float))
                                    or not 0.0 <= float(clean_error) <= 1.0):
        raise ConfigError(f"clean_error must be an error fraction in [0, 1] or None, got {clean_error!r}")
    means = {name: _mean_error(row) for name, row in table.items()}
    bench = [means.get(name) for name in BENCHMARK_CORRUPTIONS]
    complete = all(m is not None for m in bench)
    u_ce = sum(bench) / len(bench) if complete else None  # type: ignore[arg-type]

    ce: dict[str, float | None] = {}
    rel: dict[str, float | None] = {}
    for name in table:
        mean, ref = means[name], ALEXNET_ERRORS.get(name)
        usable = alexnet and mean is not None and ref is not None
        ce[name] = mean / ref if usable else None  # type: ignore[operator]
        rel[name] = ((mean - clean_error) / (ref - ALEXNET_CLEAN_ERROR)  # type: ignore[operator]
                     if usable and clean_error is not None else None)
    bench_ce = [ce.get(name) for name in BENCHMARK_CORRUPTIONS]
    m_ce = sum(bench_ce) / len(bench_ce) if all(v is not None for v in bench_ce) else None  # type: ignore[misc]
    bench_rel = [rel.get(name) for name in BENCHMARK_CORRUPTIONS]
    rel_m_ce = sum(bench_rel) / len(bench_rel) if all(v is not None for v in bench_rel) else None  # type: ignore[misc]
    return {
        "error": {name: {str(s): row[s] for s in sorted(row)} for name, row in table.items()},
        "uCE": u_ce,
        "CE": ce,
        "mCE": m_ce,
        "relative_CE": rel,
        "relative_mCE": rel_m_ce,
        "clean_error": float(clean_error) if clean_error is not None else None,
    }
