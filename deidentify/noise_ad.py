"""Noise for the ``dp`` tier: calibrated by diffprivlib's mechanisms, drawn for whole arrays.

diffprivlib's mechanisms randomise one scalar per call, through Python's ``SystemRandom``:
about 8 µs a value (measured here), so the 960 k cells of a day of 10 k groups x 96 intervals
would spend ~8 s in noise alone. Here diffprivlib still decides what matters for privacy: its
mechanisms validate ε, δ and the sensitivity, the analytic Gaussian's scale is its own
calibration (``GaussianAnalytic.variance``), Laplace's is its ``Δ1/ε``; and the draws apply
*the same samplers* to arrays: diffprivlib's Laplace is ``log(1-U1) cos(πU2) + log(1-U3)
cos(πU4)`` from four uniforms (Holohan & Braghin 2021, which resists the floating-point attacks
on inverse-CDF sampling), its Gaussian the mean of two normals scaled by √2, here each by
Box-Muller. The tests show with a two-sample Kolmogorov-Smirnov test that these draws and
diffprivlib's own ``randomise`` have the same distribution for the same ε and sensitivity.

Randomness: ``SystemUniforms`` (the default) takes every uniform from the operating system's
CSPRNG (``os.urandom``, 53 bits each): no seed exists that could be learnt or replayed.
``SeededUniforms`` is numpy's PCG64 from a seed, for tests only: its noise can be reproduced by
anyone who knows the seed, and a release drawn with it says so in its manifest.

``PrivacyLeakWarning`` is diffprivlib's signal that parameters leak (bounds left to be read from
the data, ...). ``leaks_refused`` turns it into ``InvalidParameter`` around every diffprivlib
call here, so it is never only a warning. (``warnings.catch_warnings`` is process-wide state:
calls from several threads at once may see each other's filter, never a weaker one.)
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from diffprivlib.mechanisms import GaussianAnalytic, Laplace
from diffprivlib.utils import PrivacyLeakWarning

from deidentify.cells_ad import F64
from deidentify.errors import InvalidParameter

LAPLACE = "laplace"
GAUSSIAN = "gaussian_analytic"
AUTO = "auto"
MECHANISMS = (AUTO, LAPLACE, GAUSSIAN)
_UNIT = 2.0**-53


class UniformSource(Protocol):
    """Where the noise's uniforms in [0, 1) come from."""

    @property
    def secure(self) -> bool: ...

    def uniforms(self, count: int) -> F64: ...


class SystemUniforms:
    """Uniforms from the operating system's CSPRNG: what every release uses by default."""

    secure = True

    def uniforms(self, count: int) -> F64:
        bits = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
        return (bits >> np.uint64(11)).astype(np.float64) * _UNIT


class SeededUniforms:
    """Reproducible uniforms from a seed: tests only (a seeded release is not private)."""

    secure = False

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def uniforms(self, count: int) -> F64:
        return self._rng.random(count)


@contextmanager
def leaks_refused() -> Iterator[None]:
    """Run diffprivlib with ``PrivacyLeakWarning`` raised as ``InvalidParameter``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyLeakWarning)
        try:
            yield
        except PrivacyLeakWarning as leak:
            raise InvalidParameter(f"diffprivlib reports a privacy leak: {leak}") from leak


@contextmanager
def _refused(*errors: type[Exception]) -> Iterator[None]:
    """diffprivlib's own parameter errors, as ``InvalidParameter``."""
    try:
        yield
    except errors as exc:
        raise InvalidParameter(f"diffprivlib refuses the parameters: {exc}") from exc


@dataclass(frozen=True)
class Calibration:
    """The mechanism, what it charges, and its noise scale (Laplace b or Gaussian sd, in Wh)."""

    mechanism: str
    epsilon: float
    delta: float
    """The δ charged: 0 for Laplace (pure ε-DP), the δ asked for with the Gaussian."""
    sensitivity: float
    """Δ1 for Laplace, Δ2 for the Gaussian, in Wh."""
    scale: float

    @property
    def sd(self) -> float:
        """The noise's standard deviation in Wh."""
        return self.scale * (math.sqrt(2) if self.mechanism == LAPLACE else 1.0)

    def draw(self, count: int, source: UniformSource) -> F64:
        """``count`` independent noise values."""
        u = source.uniforms(4 * count)
        a, b, c, d = u.reshape(4, count)
        if self.mechanism == LAPLACE:
            standard = np.log(1 - a) * np.cos(np.pi * b) + np.log(1 - c) * np.cos(np.pi * d)
            noise: F64 = -self.scale * standard
            return noise
        radius = np.sqrt(-2 * np.log(1 - a)), np.sqrt(-2 * np.log(1 - c))
        normals = radius[0] * np.cos(2 * np.pi * b) + radius[1] * np.cos(2 * np.pi * d)
        gaussian: F64 = self.scale * normals / math.sqrt(2)
        return gaussian


def calibrate(mechanism: str, epsilon: float, delta: float, l1: float, l2: float) -> Calibration:
    """The mechanism for ``mechanism`` (``auto``: the one with less noise per cell)."""
    if mechanism not in MECHANISMS:
        raise InvalidParameter(f"mechanism must be one of {', '.join(MECHANISMS)}")
    if mechanism == GAUSSIAN and delta == 0:
        raise InvalidParameter("gaussian_analytic needs δ > 0")
    with leaks_refused(), _refused(ValueError, TypeError):
        Laplace(epsilon=epsilon, delta=0.0, sensitivity=l1)  # diffprivlib's checks; scale Δ1/ε
        options = [Calibration(LAPLACE, epsilon, 0.0, l1, l1 / epsilon)]
        if delta > 0 and mechanism != LAPLACE:
            gauss = GaussianAnalytic(epsilon=epsilon, delta=delta, sensitivity=l2)
            options.append(
                Calibration(GAUSSIAN, epsilon, delta, l2, math.sqrt(gauss.variance(0.0)))
            )
    if mechanism != AUTO:
        return next(o for o in options if o.mechanism == mechanism)
    return min(options, key=lambda o: o.sd)
