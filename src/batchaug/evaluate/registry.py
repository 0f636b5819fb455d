"""The registry of evaluation suites: name -> where the class lives, a one-line help, and the suite's
own command-line flags. Importing this module imports nothing heavy (the command line's ``--help``
reads it); a suite's module is imported only when the suite runs.

Adding a suite: a module under ``batchaug/evaluate/`` with a :class:`~batchaug.evaluate.suite.Suite`
subclass, and one entry here (``docs/extending.md``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from batchaug.errors import ConfigError

__all__ = ["SUITES", "Flag", "SuiteEntry", "get_suite_class"]


@dataclass(frozen=True)
class Flag:
    """A command-line flag of ``batchaug eval`` that sets option ``key`` of its suite."""

    flag: str
    key: str
    help: str
    metavar: str = "VALUE"


@dataclass(frozen=True)
class SuiteEntry:
    target: Any
    """``"module:Class"`` (imported when the suite runs) or the class itself (registered at run time)"""
    help: str
    flags: tuple[Flag, ...] = field(default_factory=tuple)


SUITES: dict[str, SuiteEntry] = {
    "clean": SuiteEntry("batchaug.evaluate.clean:CleanSuite", "top-1/top-5 accuracy and loss"),
    "views": SuiteEntry("batchaug.evaluate.views:ViewsSuite",
                        "mean and majority vote over M augmented test-time views (BA)",
                        (Flag("--views-m", "m", "test-time views per image of suite views (default 8)", "M"),
                         Flag("--policy", "policy", "policy of the test-time views (default: the run's training "
                              "policy)", "POLICY"))),
    "corruptions": SuiteEntry("batchaug.evaluate.corruption_suite:CorruptionSuite",
                              "CIFAR-10-C / ImageNet-C corruption errors, uCE, CE, mCE",
                              (Flag("--corruptions-from", "source", "read corrupted images from a CIFAR-10-C style "
                                    "directory (one .npy per corruption, labels.npy) instead of generating them",
                                    "DIR"),)),
    "fourier": SuiteEntry("batchaug.evaluate.fourier:FourierSuite", "Fourier sensitivity heatmap (Yin et al. 2019)",
                          (Flag("--fourier-norm", "norm", "L2 norm v of the Fourier basis perturbation "
                                "(default 4; the Split-BN paper uses 8)", "V"),)),
    "lowpass": SuiteEntry("batchaug.evaluate.lowpass:LowPassSuite",
                          "accuracy against the bandwidth of a low-pass filter (Split-BN Fig. 5)"),
    "affinity": SuiteEntry("batchaug.evaluate.affinity:AffinitySuite",
                           "Affinity (and Diversity with --reference) of augmentation policies",
                           (Flag("--policies", "policies", "comma-separated policies of suite affinity", "P1,P2"),
                            Flag("--reference", "reference", "a run trained with augmentation, for Diversity",
                                 "RUN"))),
    "gradients": SuiteEntry("batchaug.evaluate.gradients:GradientSuite",
                            "gradient L2 norm and mini-batch gradient variance for a list of M (BA Figs. 4, 6)",
                            (Flag("--grad-m", "ms", "comma-separated M values of suite gradients", "M1,M2"),)),
    "sba": SuiteEntry("batchaug.evaluate.sba:SBASuite",
                      "SBA runs: plain / mean / vote accuracy of raw and virtual predictions (eval/sba.json)"),
    "splitbn": SuiteEntry("batchaug.evaluate.splitbn:SplitBNSuite",
                          "split-BN runs: main, aux, α-blends and single-pass blends (eval/splitbn.json)",
                          (Flag("--alphas", "alphas", "split-BN blend weights; also adds alpha=<a> modes", "A1,A2"),)),
}


def get_suite_class(name: str) -> Any:
    """The Suite subclass registered under ``name``; ConfigError listing the names otherwise."""
    entry = SUITES.get(name)
    if entry is None:
        raise ConfigError(f"--suite: unknown suite {name!r}; choose from {', '.join(SUITES)}")
    if isinstance(entry.target, type):
        return entry.target
    module_name, cls_name = entry.target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)
