"""The table of f-divergences: one frozen record per divergence.

Convention (f-GAN, Nowozin et al. 2016): P is the data, Q the model and

    D_f(P‖Q) = E_Q[f(p/q)],   f convex on u ≥ 0,  f(1) = 0.

The variational (Fenchel) lower bound that an adversarial critic maximizes is

    D_f(P‖Q) ≥ sup_T E_P[T(x)] − E_Q[f*(T(x))],   T(x) = g_f(V(x)),

with V the raw critic output and g_f an output activation whose range lies in
dom f*. The supremum is attained at T = f'(p/q). Conjugates are taken over the
true domain of f, u ≥ 0, so some of them are piecewise (Pearson χ², total
variation, α > 1).

Every function takes and returns torch tensors and works elementwise.
`f_star_g(v) = f*(g_f(v))` is written in a numerically stable form next to the
plain composition it replaces; the tests check that the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from divgen import catalog
from divgen.errors import InputError

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Divergence:
    """An f-divergence D_f(P‖Q) = E_Q[f(p/q)] and what its critic needs."""

    name: str  # the CLI/API name, e.g. "kl" or "alpha:0.5"
    title: str  # human-readable name
    f: Fn  # generator f(u), u ≥ 0
    f_prime: Fn  # f'(u); the optimal critic is T = f'(p/q)
    f_star: Fn  # convex conjugate f*(t) = sup_{u ≥ 0} ut − f(u); +inf outside dom f*
    g: Fn  # output activation g_f: ℝ → dom f*
    f_star_g: Fn  # f*(g_f(v)) in a numerically stable form
    dom: tuple[float, float]  # closure of dom f*: lo ≤ t ≤ hi
    formulas: dict[str, str]  # f, f*, dom f*, g_f as text, for the table
    # V as a function of l = log p/q at the optimal critic: g_f(v_opt(l)) = f'(exp l). The
    # estimator evaluates the bound at a classifier's log-ratio through it, so that the
    # stable forms g_f and f*∘g_f are used, never f* of an overflowing f'(exp l).
    v_opt: Fn = lambda l: l
    # g_f and f*∘g_f are finite, with finite gradients, for every float32 v (log-sigmoid,
    # softplus, tanh forms), so critic outputs need no cap (objectives.capped)
    stable: bool = False
    # |g_f(v)| and |f*(g_f(v))| grow no faster than exp(growth·|v|): objectives.capped
    # saturates v at 60/growth, so that both stay finite in float32
    growth: float = 1.0
    # f(u) = Σ c·u^k·(log u)^m over (c, k, m), when f has that form: the closed forms between
    # Gaussians (∫p^k q^(1−k) and KL) and the log-space integrands of densities.py use it
    terms: tuple[tuple[float, float, int], ...] = ()

    @property
    def f_prime_1(self) -> float:
        """f'(1): the optimal critic's value where P and Q agree."""
        return float(self.f_prime(torch.tensor(1.0, dtype=torch.float64)))

    @property
    def maximum(self) -> float:
        """D_f(P‖Q) when P and Q have disjoint supports, the largest value it takes: f(0) (Q's mass, where
        p = 0) plus lim f(u)/u = sup dom f* (P's mass, where q = 0). log 2 for js, 1 for tv, inf for kl."""
        return float(self.f(torch.tensor(0.0, dtype=torch.float64))) + self.dom[1]

    @property
    def symmetric(self) -> bool:
        """True when D_f(P‖Q) = D_f(Q‖P), i.e. f(u) = u f(1/u)."""
        u = torch.logspace(-3, 3, 61, dtype=torch.float64)
        return bool(torch.allclose(self.f(u), u * self.f(1 / u), atol=1e-9, rtol=1e-7))


# ---------------------------------------------------------------- numerics ---
def _where_in_dom(t: torch.Tensor, ok: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` where t lies in dom f*, +inf elsewhere."""
    return torch.where(ok, value, torch.full_like(t, math.inf))


def wright_omega(x: torch.Tensor) -> torch.Tensor:
    """ω(x), the solution w > 0 of w + log w = x, i.e. Lambert W(exp(x)).

    Working with ω(x) instead of W(exp(x)) avoids the overflow of exp(x).
    Newton's method in float64 without gradients, then one differentiable
    Newton step so that autograd sees dω/dx = ω / (1 + ω) exactly.
    """
    with torch.no_grad():
        x64 = x.detach().double()
        # x − log x is accurate for large x, exp(x) for x → −∞; both start
        # below the root's basin edge so Newton stays positive.
        w = torch.where(x64 > 1, x64 - torch.log(x64.clamp(min=1.0)), torch.exp(x64.clamp(max=1.0)))
        for _ in range(12):
            w = (w * (1 + x64 - torch.log(w)) / (1 + w)).clamp(min=1e-300)
        w = w.to(x.dtype)
    return w - (w + torch.log(w) - x) * w / (1 + w)


def log_wright_omega(x: torch.Tensor) -> torch.Tensor:
    """log ω(x), with its derivative 1/(1 + ω) attached directly.

    Going through log(ω) in autograd would multiply 1/ω by ω/(1 + ω), which
    overflows float32 in between once ω is tiny (x ≪ 0).
    """
    with torch.no_grad():
        w = wright_omega(x)
    return torch.log(w) + (x - x.detach()) / (1 + w)


# ---------------------------------------------------------------- factories ---
def _kl() -> Divergence:
    return Divergence(
        name="kl",
        title="Kullback-Leibler KL(P‖Q)",
        f=lambda u: torch.xlogy(u, u),
        f_prime=lambda u: torch.log(u) + 1,
        f_star=lambda t: torch.exp(t - 1),
        g=lambda v: v,
        f_star_g=lambda v: torch.exp(v - 1),
        dom=(-math.inf, math.inf),
        formulas={"f": "u log u", "f*": "exp(t − 1)", "dom f*": "ℝ", "g_f": "v"},
        v_opt=lambda l: l + 1,  # f'(u) = log u + 1
        terms=((1.0, 1.0, 1),),
    )


def _reverse_kl() -> Divergence:
    return Divergence(
        name="reverse-kl",
        title="reverse Kullback-Leibler KL(Q‖P)",
        f=lambda u: -torch.log(u),
        f_prime=lambda u: -1 / u,
        f_star=lambda t: _where_in_dom(t, t < 0, -1 - torch.log(-t.clamp(max=-1e-300))),
        g=lambda v: -torch.exp(-v),
        # f*(−exp(−v)) = −1 − log(exp(−v)) = v − 1
        f_star_g=lambda v: v - 1,
        dom=(-math.inf, 0.0),
        formulas={"f": "−log u", "f*": "−1 − log(−t)", "dom f*": "t < 0", "g_f": "−exp(−v)"},
        terms=((-1.0, 0.0, 1),),
    )


def _pearson() -> Divergence:
    def f_star(t):
        # below t = −2 the supremum over u ≥ 0 sits at u = 0: f*(t) = −f(0) = −1
        return torch.where(t >= -2, t + t * t / 4, -torch.ones_like(t))

    # g_f(v) = f'(e^v) = 2(e^v − 1): v is the log-ratio, so the cap on v bounds log p/q
    # (at 30) rather than p/q itself (at 31 with g_f(v) = v). f*(2(e^v − 1)) = e^{2v} − 1.
    return Divergence(
        name="pearson",
        title="Pearson χ²",
        f=lambda u: (u - 1) ** 2,
        f_prime=lambda u: 2 * (u - 1),
        f_star=f_star,
        g=lambda v: 2 * torch.expm1(v),
        f_star_g=lambda v: torch.expm1(2 * v),
        dom=(-math.inf, math.inf),
        growth=2.0,
        terms=((1.0, 2.0, 0), (-2.0, 1.0, 0), (1.0, 0.0, 0)),
        formulas={"f": "(u − 1)²", "f*": "t + t²/4 (t ≥ −2), −1 (t < −2)", "dom f*": "ℝ", "g_f": "2(exp(v) − 1)"},
    )


def _neyman() -> Divergence:
    return Divergence(
        name="neyman",
        title="Neyman χ²",
        f=lambda u: (1 - u) ** 2 / u,
        f_prime=lambda u: 1 - 1 / (u * u),
        f_star=lambda t: _where_in_dom(t, t <= 1, 2 - 2 * torch.sqrt((1 - t).clamp(min=0))),
        g=lambda v: -torch.expm1(-v),
        # 1 − g = exp(−v), so f*(g) = 2 − 2 exp(−v/2)
        f_star_g=lambda v: 2 - 2 * torch.exp(-v / 2),
        dom=(-math.inf, 1.0),
        formulas={"f": "(1 − u)²/u", "f*": "2 − 2√(1 − t)", "dom f*": "t ≤ 1", "g_f": "1 − exp(−v)"},
        v_opt=lambda l: 2 * l,  # f'(u) = 1 − u^−2
        terms=((1.0, 1.0, 0), (-2.0, 0.0, 0), (1.0, -1.0, 0)),
    )


def _hellinger() -> Divergence:
    return Divergence(
        name="hellinger",
        title="squared Hellinger ∫(√p − √q)² (= 2·H² in the textbook convention, range [0, 2])",
        f=lambda u: (torch.sqrt(u) - 1) ** 2,
        f_prime=lambda u: 1 - 1 / torch.sqrt(u),
        f_star=lambda t: _where_in_dom(t, t < 1, t / (1 - t)),
        g=lambda v: -torch.expm1(-v),
        # (1 − e^{−v}) / e^{−v} = e^v − 1
        f_star_g=torch.expm1,
        dom=(-math.inf, 1.0),
        formulas={"f": "(√u − 1)²", "f*": "t / (1 − t)", "dom f*": "t < 1", "g_f": "1 − exp(−v)"},
        v_opt=lambda l: l / 2,  # f'(u) = 1 − u^−½
        terms=((1.0, 1.0, 0), (-2.0, 0.5, 0), (1.0, 0.0, 0)),
    )


def _jeffrey() -> Divergence:
    def f_star(t):
        # t = f'(u) = log u + 1 − 1/u; with w = 1/u: w + log w = 1 − t, so w = ω(1 − t)
        # With L = −log w, w + log w = 1 − t gives w + t − 2 = L − 1 and 1/w = e^L, so
        # f* = e^L + L − 1: no cancellation of w against t when t ≪ 0 (w ≫ 1), and
        # no 1/w overflow when t ≫ 0 (w → 0)
        log_w = log_wright_omega(1 - t)
        return torch.exp(-log_w) - log_w - 1

    def g(v):
        # The optimal critic f'(p/q) = log u + 1 − 1/u falls like −q/p where p ≪ q, far
        # below what a bounded v reaches; f* grows only like −log(−t) on that side, so
        # an exponential tail is safe there. Above 0, f* grows like exp(t): keep t = v.
        return torch.where(v >= 0, v, -torch.expm1(-v.clamp(max=0)))

    def v_opt(l):
        # t = f'(e^l) = l + 1 − e^−l; g⁻¹(t) = t for t ≥ 0 (l ≥ 0), −log(1 − t) below, where
        # log(1 − t) = log(e^−l − l) = −l + log1p(−l·e^l) without cancellation
        neg = l.clamp(max=0)
        return torch.where(l >= 0, l - torch.expm1(-l.clamp(min=0)), neg - torch.log1p(-neg * torch.exp(neg)))

    return Divergence(
        name="jeffrey",
        title="Jeffrey (symmetric KL)",
        f=lambda u: (u - 1) * torch.log(u),
        f_prime=lambda u: torch.log(u) + 1 - 1 / u,
        f_star=f_star,
        g=g,
        f_star_g=lambda v: f_star(g(v)),
        dom=(-math.inf, math.inf),
        formulas={"f": "(u − 1) log u", "f*": "W(e^{1−t}) + 1/W(e^{1−t}) + t − 2", "dom f*": "ℝ", "g_f": "v (v ≥ 0), 1 − exp(−v) (v < 0)"},
        v_opt=v_opt,
        terms=((1.0, 1.0, 1), (-1.0, 0.0, 1)),
    )


def _gan() -> Divergence:
    return Divergence(
        name="gan",
        title="GAN (2·JS − log 4)",
        f=lambda u: torch.xlogy(u, u) - torch.xlogy(u + 1, u + 1),
        f_prime=lambda u: torch.log(u / (u + 1)),
        f_star=lambda t: _where_in_dom(t, t < 0, -torch.log(-torch.expm1(t.clamp(max=-1e-300)))),
        # T = log D with D = sigmoid(v): log D = log_sigmoid(v), stable for any v
        g=F.logsigmoid,
        # −log(1 − sigmoid(v)) = −log_sigmoid(−v) = softplus(v)
        f_star_g=F.softplus,
        dom=(-math.inf, 0.0),
        stable=True,
        formulas={"f": "u log u − (u + 1) log(u + 1)", "f*": "−log(1 − exp(t))", "dom f*": "t < 0", "g_f": "log σ(v) = −log(1 + exp(−v))"},
    )


def _js_weighted(pi: float, name: str | None = None) -> Divergence:
    """π·KL(P‖M) + (1 − π)·KL(Q‖M), M = πP + (1 − π)Q; π = 1/2 is JS."""
    c = 1 - pi

    def f(u):
        m = pi * u + c
        return pi * torch.xlogy(u, u) - torch.xlogy(m, m)

    def f_star(t):
        hi = -pi * math.log(pi)
        inside = 1 - pi * torch.exp(t.clamp(max=hi) / pi)
        return _where_in_dom(t, t < hi, c * math.log(c) - c * torch.log(inside.clamp(min=1e-300)))

    return Divergence(
        name=name or f"js-weighted:{pi:g}",
        title="Jensen-Shannon" if name == "js" else f"weighted Jensen-Shannon, π = {pi:g}",
        f=f,
        f_prime=lambda u: pi * torch.log(u / (pi * u + c)),
        f_star=f_star,
        # π e^{T/π} = sigmoid(v): T = π(log_sigmoid(v) − log π)
        g=lambda v: pi * (F.logsigmoid(v) - math.log(pi)),
        # 1 − π e^{T/π} = sigmoid(−v), and −log sigmoid(−v) = softplus(v)
        f_star_g=lambda v: c * (math.log(c) + F.softplus(v)),
        # sigmoid(v)/π = u/(πu + c) at v = log u + log(π/c)
        v_opt=lambda l: l + math.log(pi / c),
        dom=(-math.inf, -pi * math.log(pi)),
        stable=True,
        formulas={
            "f": "½[u log u − (u + 1) log((u + 1)/2)]" if name == "js" else "πu log u − (πu + 1 − π) log(πu + 1 − π)",
            "f*": "−½ log(2 − exp(2t))" if name == "js" else "(1 − π) log(1 − π) − (1 − π) log(1 − π exp(t/π))",
            "dom f*": f"t < {-pi * math.log(pi):.4g}" + (" (½ log 2)" if name == "js" else " (−π log π)"),
            "g_f": "½(log 2 + log σ(v))" if name == "js" else "π(log σ(v) − log π)",
        },
    )


def _tv() -> Divergence:
    return Divergence(
        name="tv",
        title="total variation",
        f=lambda u: 0.5 * torch.abs(u - 1),
        f_prime=lambda u: 0.5 * torch.sign(u - 1),
        # over u ≥ 0: f*(t) = t on [−½, ½], and −f(0) = −½ below −½
        f_star=lambda t: _where_in_dom(t, t <= 0.5, t.clamp(min=-0.5)),
        g=lambda v: 0.5 * torch.tanh(v),
        f_star_g=lambda v: 0.5 * torch.tanh(v),
        # the optimal critic is ½·sign(log p/q); tanh(±1e4) is ±1 exactly
        v_opt=lambda l: 1e4 * torch.sign(l),
        dom=(-math.inf, 0.5),
        stable=True,
        formulas={"f": "½|u − 1|", "f*": "t (|t| ≤ ½), −½ (t < −½)", "dom f*": "t ≤ ½", "g_f": "½ tanh v"},
    )


def _alpha(a: float) -> Divergence:
    """Amari α-divergence, f(u) = (u^α − αu − (1 − α)) / (α(α − 1)).

    α = 2 gives ½ Pearson, α = ½ gives 2·squared Hellinger, α = −1 gives
    ½ Neyman; α → 1 is KL and α → 0 reverse KL.
    """
    d = a - 1
    # g_f(v) = f'(e^v) = (exp((α − 1)v) − 1)/(α − 1): v is the log-ratio. |g_f| and f*(g_f(v))
    # = (exp(αv) − 1)/α grow like exp(max(|α|, |α − 1|)·|v|), which sets the cap (growth).
    lo, hi = (-math.inf, math.inf) if a > 1 else (-math.inf, 1 / (1 - a))

    def f_star(t):
        s = 1 + d * t
        pos = s > 0
        value = (torch.pow(torch.where(pos, s, torch.ones_like(s)), a / d) - 1) / a
        if a > 1:  # supremum at u = 0 once s ≤ 0: −f(0) = −1/α
            return torch.where(pos, value, torch.full_like(t, -1 / a))
        inside = t <= hi if a < 0 else t < hi  # α < 0: f* stays finite at the edge
        return _where_in_dom(t, inside, torch.where(pos, value, torch.full_like(t, -1 / a)))

    return Divergence(
        name=f"alpha:{a:g}",
        title=f"α-divergence, α = {a:g}",
        f=lambda u: (torch.pow(u, a) - a * u - (1 - a)) / (a * d),
        f_prime=lambda u: (torch.pow(u, d) - 1) / d,
        f_star=f_star,
        g=lambda v: torch.expm1(d * v) / d,
        # 1 + (α − 1)g = exp((α − 1)v), raised to α/(α − 1)
        f_star_g=lambda v: torch.expm1(a * v) / a,
        dom=(lo, hi),
        growth=max(abs(a), abs(d)),
        terms=((1 / (a * d), a, 0), (-1 / d, 1.0, 0), (1 / a, 0.0, 0)),
        formulas={
            "f": "(u^α − αu − (1 − α)) / (α(α − 1))",
            "f*": "((1 + (α − 1)t)^(α/(α − 1)) − 1) / α" + (", −1/α where 1 + (α − 1)t ≤ 0" if a > 1 else ""),
            "dom f*": "ℝ" if a > 1 else (f"t ≤ {hi:.4g}" if a < 0 else f"t < {hi:.4g}"),
            "g_f": f"(exp({d:.4g}·v) − 1) / (α − 1)",
        },
    )


# ------------------------------------------------------------------- table ---
_FIXED: dict[str, Callable[[], Divergence]] = {
    "kl": _kl,
    "reverse-kl": _reverse_kl,
    "pearson": _pearson,
    "neyman": _neyman,
    "hellinger": _hellinger,
    "jeffrey": _jeffrey,
    "js": lambda: _js_weighted(0.5, name="js"),
    "gan": _gan,
    "tv": _tv,
}
# Representative parameters, used by the table and the tests.
EXAMPLES = tuple(_FIXED) + ("alpha:-1", "alpha:0.5", "alpha:2", "alpha:3", "js-weighted:0.25")


def get(name: str) -> Divergence:
    """The f-divergence called `name` (one of catalog.F_DIVERGENCES, parameters filled in); InputError if there is none."""
    head, parameter = catalog.parse_divergence(name)
    if parameter is not None:
        return _alpha(parameter) if head == "alpha" else _js_weighted(parameter)
    if head not in _FIXED:
        raise InputError(f"{name!r} is not an f-divergence; valid: {', '.join(catalog.F_DIVERGENCES)}")
    return _FIXED[head]()


def table(names=EXAMPLES) -> list[dict]:
    """One row per divergence: name, f, f*, dom f*, g_f, f'(1), and its maximum (None where infinite)."""
    rows = []
    for name in names:
        d = get(name)
        top = round(d.maximum, 6) if math.isfinite(d.maximum) else None
        rows.append({"name": d.name, "title": d.title, **d.formulas, "f'(1)": round(d.f_prime_1, 6), "maximum": top})
    return rows
