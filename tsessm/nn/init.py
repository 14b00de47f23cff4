"""Initial continuous-time eigenvalues for the diagonal state matrix (ESSM.md section 6).

Each function returns `n` complex eigenvalues with real part -1/2, as a numpy array.
"""
from __future__ import annotations

import numpy as np


def s4d_lin(n: int) -> np.ndarray:
    """S4D-Lin: lambda_k = -1/2 + i pi k."""
    return -0.5 + 1j * np.pi * np.arange(n)


def s4d_inv(n: int) -> np.ndarray:
    """S4D-Inv: lambda_k = -1/2 + i n/pi (n/(2k+1) - 1)."""
    k = np.arange(n)
    return -0.5 + 1j * (n / np.pi) * (n / (2 * k + 1) - 1)


def legs(n: int) -> np.ndarray:
    """S4D-LegS: eigenvalues of the normal part of HiPPO-LegS.

    HiPPO-LegS of size 2n plus P P^T (P_k = sqrt(k + 1/2)) equals -1/2 I plus a skew-symmetric
    matrix, so its eigenvalues are -1/2 + i w in conjugate pairs; we keep the n with w > 0.
    """
    size = 2 * n
    q = np.sqrt(2 * np.arange(size) + 1.0)
    hippo = -np.tril(np.outer(q, q), -1) - np.diag(np.arange(size) + 1.0)
    p = np.sqrt(np.arange(size) + 0.5)
    normal = hippo + np.outer(p, p)
    skew = 0.5 * (normal - normal.T)  # the symmetric part is exactly -1/2 I
    w = np.linalg.eigvalsh(-1j * skew)  # skew is i * Hermitian: real spectrum
    w = np.sort(w[w > 0])
    return -0.5 + 1j * w[:n]


INITS = {"s4d-lin": s4d_lin, "s4d-inv": s4d_inv, "legs": legs}
