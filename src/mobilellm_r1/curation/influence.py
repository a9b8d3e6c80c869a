"""Influence of training samples on capability probing sets (MobileLLM-R1, arXiv 2509.24945, Eq. 2-4).

Eq. 2 (Koh & Liang 2017) is the influence of a training sample x on a probe sample z,
``I(x, z) = -grad L(z)^T H^-1 grad L(x)``: the change of L(z) when x is up-weighted.  **Sign
convention of this module: a score is positive when training on x lowers the probe loss**, i.e. it is
``-I``.  A gradient step on x alone, ``theta' = theta - eta P grad L(x)``, changes the mean probe loss by
``-eta grad L_P^T P grad L(x)`` to first order, so with the *query* ``u = P grad L_P`` (P symmetric)

    score(x) = u^T grad L(x) = d/de L(x; theta + e u) |_{e=0}

and a positive score predicts a drop of the probe loss.  L(x) is the mean next-token loss of x; L_P the
mean over all target tokens of the probing set (:func:`probe_gradient`).

The score is computed in forward mode (:func:`influence_scores`): one ``torch.func.jvp`` of the vector of
per-sample losses [B] along u gives all B directional derivatives at once (the rows of a right-padded
batch are independent); no per-sample gradient is formed and no autograd graph is built.  Several queries
(capabilities) share one pass through ``vmap`` over the tangents.  Two slower paths check it:
:func:`score_per_sample_grad` (``vmap(grad)``, dot with u) and :func:`score_finite_difference`
(central difference along u).

Preconditioners P (the query is ``u = P grad L_P``):

* :class:`IdentityPreconditioner`: TracIn (Pruthi et al. 2020), ``u = grad L_P``.
* :class:`AdamPreconditioner`: LESS-style (Xia et al. 2024), ``u = grad L_P / (sqrt(v_hat) + eps)`` with
  the Adam second moments v of the checkpoint (``v_hat = v / (1 - beta2^step)``).  This is the linearised
  LESS: the Adam step of x is taken with the checkpoint's (fixed) v and without momentum, which makes the
  score linear in grad L(x).
* :class:`DataInfPreconditioner`: DataInf (Kwon et al. 2024), a per-block (one block per parameter
  tensor) closed form of the damped inverse Hessian from n per-sample training gradients g_i:
  ``(G + lambda I)^-1 ~= 1/n sum_i (g_i g_i^T + lambda I)^-1`` (Sherman-Morrison), so
  ``u = (v - 1/n sum_i g_i (g_i^T v) / (lambda + g_i^T g_i)) / lambda``.  As in DataInf's code,
  ``lambda_l = 0.1 * mean_i(g_i^T g_i) / d_l`` (the mean *squared entry*; ``per_element=False`` drops
  the ``/ d_l``).

Eq. 3-4 (:func:`joint_influence`): the joint score sums capabilities c and checkpoints t,
``I(x) = sum_c sum_t alpha_{c,t} score_{c,t}(x)`` with alpha uniform over c and proportional to the
training step of checkpoint t, normalised to sum 1 over t.

The chunked, resumable, data-parallel runner writing parquet lives in :mod:`.influence_run`.
"""

from __future__ import annotations

import abc
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..eval.nll import token_mean_nll
from ..model.model import module_device, upcast
from ..model.padding import pad_rows
from ..train.losses import IGNORE_INDEX
from .jvp_attention import jvp_sdpa
from .jvp_linear_ce import LinearCrossEntropy
from .jvp_rules import jvp_rules

CHUNK_TOKENS = 8192  # positions per LM-head chunk: [chunk, vocab] logits are formed at a time
Rows = Sequence[Sequence[int]]
Query = list[Tensor]  # one tensor per selected parameter, same shapes


# ====================================================================== parameters and batches
def select_params(model: nn.Module, subset: str | Sequence[str] = "all") -> OrderedDict[str, nn.Parameter]:
    """The parameters influence is measured over, name -> parameter, in ``named_parameters`` order.

    ``subset``: ``"all"``; ``"embeddings"`` (the token embedding, which is also the tied LM head, plus
    ``lm_head.weight`` when untied); ``"last:k"`` (the last k decoder layers and the final norm); or an
    explicit sequence of parameter names.  Tied parameters appear once, under their first name.
    """
    named = OrderedDict(model.named_parameters())
    if not isinstance(subset, str):
        missing = [n for n in subset if n not in named]
        if missing:
            raise ValueError(f"unknown parameter names {missing}")
        wanted = set(subset)
        return OrderedDict((n, p) for n, p in named.items() if n in wanted)
    if subset == "all":
        return named
    if subset == "embeddings":
        keep = {"embed_tokens.weight", "lm_head.weight"}
        return OrderedDict((n, p) for n, p in named.items() if n in keep)
    if subset.startswith("last:"):
        layers = len(model.layers)
        k = int(subset.split(":", 1)[1])
        if not 1 <= k <= layers:
            raise ValueError(f"subset {subset!r}: k must lie in 1..{layers}")
        prefixes = tuple(f"layers.{i}." for i in range(layers - k, layers))
        return OrderedDict((n, p) for n, p in named.items() if n.startswith(prefixes) or n == "norm.weight")
    raise ValueError(f"unknown parameter subset {subset!r}: use 'all', 'embeddings', 'last:k' or names")


def pad_batch(rows: Rows, pad_id: int = 0, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Right-padded ``ids`` [B, T] and ``labels`` [B, T] (= ids, ``-100`` at pads).  Position t's logits
    predict ``labels[:, t + 1]``.  Any valid ``pad_id`` does: the model is causal and pads come last."""
    return pad_rows(rows, pad_id).to(device), pad_rows(rows, IGNORE_INDEX).to(device)


def _head_name(model: nn.Module) -> str | None:
    """The name under which ``named_parameters`` lists the LM-head weight (the embedding when tied)."""
    head = getattr(getattr(model, "lm_head", None), "weight", None)
    if head is None:
        return None
    return next(n for n, p in model.named_parameters() if p is head)


def _loss_sums(
    model: nn.Module,
    params: Mapping[str, Tensor],
    ids: Tensor,
    labels: Tensor,
    chunk_tokens: int,
    jvp_head: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-row summed next-token cross-entropy [B] and target counts [B] under ``params``.

    The LM head is applied to the final hidden states in chunks of positions, so [B, T, V] logits are
    never formed at once; half-precision logits are upcast to float32 for the loss. ``jvp_head``: the
    head and loss go through :class:`.jvp_linear_ce.LinearCrossEntropy` (forward mode only)."""
    targets = labels[:, 1:]
    head = _head_name(model)
    if head is None:
        hidden, weight, step = None, None, max(1, targets.shape[1])
        logits_all = functional_call(model, dict(params), (ids,))[:, :-1]
    else:
        hidden = functional_call(model, dict(params), (ids,), {"return_hidden": True})[:, :-1]
        weight, step = params[head], max(1, chunk_tokens // max(1, ids.shape[0]))
    total: Tensor | None = None
    for s in range(0, targets.shape[1], step):
        tgt = targets[:, s : s + step]
        if jvp_head and hidden is not None:
            ce = LinearCrossEntropy.apply(hidden[:, s : s + step].flatten(0, 1), weight, tgt.flatten())[0]
        else:
            logits = (
                logits_all[:, s : s + step] if hidden is None else F.linear(hidden[:, s : s + step], weight)
            )
            ce = F.cross_entropy(
                upcast(logits).flatten(0, 1), tgt.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
            )
        part = ce.view(tgt.shape).sum(dim=1)
        total = part if total is None else total + part
    if total is None:  # one-token rows: nothing to predict
        total = torch.zeros(ids.shape[0], device=ids.device)
    return total, (targets != IGNORE_INDEX).sum(dim=1)


def _frozen(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def per_sample_loss(
    model: nn.Module,
    ids: Tensor,
    labels: Tensor,
    params: Mapping[str, Tensor] | None = None,
    *,
    chunk_tokens: int = CHUNK_TOKENS,
) -> Tensor:
    """Mean next-token loss of each row [B] (0 for rows with no target), with ``params`` overriding
    the model's parameters by name."""
    full = {**_frozen(model), **(params or {})}
    sums, counts = _loss_sums(model, full, ids, labels, chunk_tokens)
    return sums / counts.clamp(min=1)


def _batches(rows: Rows, batch_size: int) -> Iterator[tuple[list[int], Rows]]:
    """Index lists and rows of consecutive batches of the rows sorted by length (less padding)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        yield idx, [rows[i] for i in idx]


@torch.no_grad()
def probe_loss(
    model: nn.Module, probe_rows: Rows, params: Mapping[str, Tensor] | None = None, *, batch_size: int = 8
) -> float:
    """Mean next-token loss over all target tokens of the probing set (L_P), with ``params`` overriding
    the model's parameters by name."""
    full = {**_frozen(model), **(params or {})}

    def sums(ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return _loss_sums(model, full, ids, labels, CHUNK_TOKENS)

    with sdpa_kernel(SDPBackend.MATH):
        examples = [(row, row) for row in probe_rows]
        return token_mean_nll(examples, sums, batch_size=batch_size, device=module_device(model))[0]


def probe_gradient(
    model: nn.Module,
    probe_rows: Rows,
    params: Mapping[str, nn.Parameter],
    *,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> Query:
    """grad L_P w.r.t. ``params`` (one tensor per parameter): L_P is the mean next-token loss over all
    target tokens of ``probe_rows`` (token-id lists, batched here right-padded with labels -100).
    ``progress(k)`` is called after each batch of ``k`` rows."""
    names = list(params)
    n_tokens = sum(max(len(r) - 1, 0) for r in probe_rows)
    if n_tokens == 0:
        raise ValueError("the probing set has no target tokens")
    acc = [torch.zeros_like(p) for p in params.values()]
    live = dict(model.named_parameters())
    for _, rows in _batches(probe_rows, batch_size):
        ids, labels = pad_batch(rows, device=module_device(model))
        sums, _ = _loss_sums(model, live, ids, labels, CHUNK_TOKENS)
        grads = torch.autograd.grad(sums.sum() / n_tokens, [live[n] for n in names])
        for a, g in zip(acc, grads, strict=True):
            a.add_(g)
        if progress is not None:
            progress(len(rows))
    return acc


def per_sample_gradients(
    model: nn.Module, rows: Rows, params: Mapping[str, nn.Parameter], *, batch_size: int = 8
) -> Iterator[tuple[list[int], list[Tensor]]]:
    """Per-sample gradients of the mean token loss: yields (row indices, [tensor [b, *shape] per param])
    for batches of rows (``vmap`` of ``grad``; memory b x |params|)."""
    frozen = _frozen(model)

    def loss_one(sub: dict[str, Tensor], ids: Tensor, labels: Tensor) -> Tensor:
        sums, counts = _loss_sums(model, {**frozen, **sub}, ids[None], labels[None], CHUNK_TOKENS)
        return (sums / counts.clamp(min=1))[0]

    primals = {n: p.detach() for n, p in params.items()}
    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    with sdpa_kernel(SDPBackend.MATH):
        for idx, batch in _batches(rows, batch_size):
            ids, labels = pad_batch(batch, device=module_device(model))
            g = per_sample(primals, ids, labels)
            yield idx, [g[n] for n in params]


# ====================================================================== preconditioners
class Preconditioner(abc.ABC):
    """Maps probe gradients to queries u = P grad L_P (P symmetric positive definite)."""

    @abc.abstractmethod
    def apply(self, grads: Sequence[Query]) -> list[Query]:
        """Queries for several probe gradients (one pass over any data the preconditioner needs)."""

    def __call__(self, grad_probe: Query) -> Query:
        return self.apply([grad_probe])[0]


class IdentityPreconditioner(Preconditioner):
    """TracIn: u = grad L_P."""

    def apply(self, grads: Sequence[Query]) -> list[Query]:
        return [[g.clone() for g in q] for q in grads]


class AdamPreconditioner(Preconditioner):
    """LESS-style (linearised): u = grad L_P / (sqrt(v / (1 - beta2^step)) + eps).

    ``exp_avg_sq``: name -> Adam second moment ``v`` (``optimizer.state[p]["exp_avg_sq"]``) for every
    selected parameter name (in ``names`` order); ``step`` None skips the bias correction.  Build it from
    a live optimizer or an FQN-keyed optimizer state dict with :meth:`from_optimizer` /
    :meth:`from_state_dict`.
    """

    def __init__(
        self,
        exp_avg_sq: Mapping[str, Tensor],
        names: Sequence[str],
        *,
        eps: float = 1e-8,
        step: int | None = None,
        beta2: float = 0.999,
    ) -> None:
        missing = [n for n in names if n not in exp_avg_sq]
        if missing:
            raise ValueError(f"no Adam exp_avg_sq for {missing}")
        correction = 1.0 - beta2 ** int(step) if step else 1.0
        self.denominators = [(exp_avg_sq[n].detach() / correction).sqrt() + eps for n in names]

    @classmethod
    def from_optimizer(
        cls, optimizer: torch.optim.Optimizer, model: nn.Module, names: Sequence[str]
    ) -> AdamPreconditioner:
        """From a live (non-sharded) Adam/AdamW optimizer over ``model``'s parameters."""
        name_of = {id(p): n for n, p in model.named_parameters()}
        moments, step, beta2, eps = {}, None, 0.999, 1e-8
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = optimizer.state.get(p, {})
                if "exp_avg_sq" in state and id(p) in name_of:
                    moments[name_of[id(p)]] = state["exp_avg_sq"]
                    step, beta2, eps = int(state["step"]), group["betas"][1], group["eps"]
        return cls(moments, names, eps=eps, step=step, beta2=beta2)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], names: Sequence[str]) -> AdamPreconditioner:
        """From an optimizer state dict keyed by parameter names (``get_state_dict`` / our DCP
        checkpoints' ``optim`` entry: ``{"state": {fqn: {"exp_avg_sq", "step"}}, "param_groups"}``)
        or from a plain mapping name -> exp_avg_sq tensor (no bias correction)."""
        if "state" not in state_dict:
            return cls(state_dict, names)
        states = state_dict["state"]
        groups = state_dict.get("param_groups") or [{}]
        beta2 = groups[0].get("betas", (0.9, 0.999))[1]
        eps = groups[0].get("eps", 1e-8)
        moments = {n: s["exp_avg_sq"] for n, s in states.items() if "exp_avg_sq" in s}
        steps = [int(s["step"]) for s in states.values() if "step" in s]
        return cls(moments, names, eps=eps, step=steps[0] if steps else None, beta2=beta2)

    def apply(self, grads: Sequence[Query]) -> list[Query]:
        return [[g / d.to(g) for g, d in zip(q, self.denominators, strict=True)] for q in grads]


class DataInfPreconditioner(Preconditioner):
    """DataInf (Kwon et al. 2024): per parameter tensor l, with per-sample training gradients g_i
    (i = 1..n) of that tensor and v the probe gradient's block,

        (G_l + lambda_l I)^-1 v ~= 1/n sum_i (g_i g_i^T + lambda_l I)^-1 v
                                = (v - 1/n sum_i g_i (g_i^T v) / (lambda_l + g_i^T g_i)) / lambda_l,

    ``lambda_l = damping * mean_i(g_i^T g_i) / d_l`` (DataInf's code: the mean squared gradient entry;
    ``per_element=False``: ``damping * mean_i(g_i^T g_i)``).  A ``lambdas`` sequence overrides it.

    The per-sample gradients are streamed (``vmap(grad)`` in batches): kept in memory when they take at
    most ``cache_bytes``, else recomputed for the second pass (lambda needs all norms first).
    """

    def __init__(
        self,
        model: nn.Module,
        params: Mapping[str, nn.Parameter],
        train_rows: Rows,
        *,
        damping: float = 0.1,
        per_element: bool = True,
        lambdas: Sequence[float] | None = None,
        batch_size: int = 8,
        cache_bytes: int = 1 << 30,
    ) -> None:
        if not train_rows:
            raise ValueError("DataInf needs training rows for its per-sample gradients")
        self.model, self.params, self.rows, self.batch_size = model, params, train_rows, batch_size
        numel = sum(p.numel() * p.element_size() for p in params.values())
        keep = numel * len(train_rows) <= cache_bytes
        self._cache: list[list[Tensor]] | None = [] if keep else None
        sq = torch.zeros(len(train_rows), len(params), dtype=torch.float64)
        for idx, grads in self._grads():
            for j, g in enumerate(grads):
                sq[idx, j] = g.flatten(1).pow(2).sum(dim=1).double().cpu()
            if self._cache is not None:
                self._cache.append(grads)
        self.sq_norms = sq  # [n, blocks]
        if lambdas is None:
            sizes = torch.tensor([float(p.numel()) for p in params.values()], dtype=torch.float64)
            lam = damping * sq.mean(dim=0) / (sizes if per_element else 1.0)
            lambdas = lam.clamp(min=torch.finfo(torch.float64).tiny).tolist()
        self.lambdas = [float(x) for x in lambdas]

    def _grads(self) -> Iterator[tuple[list[int], list[Tensor]]]:
        if self._cache is not None and self._cache:
            order = sorted(range(len(self.rows)), key=lambda i: len(self.rows[i]))
            for k, grads in enumerate(self._cache):
                yield order[k * self.batch_size : (k + 1) * self.batch_size], grads
            return
        yield from per_sample_gradients(self.model, self.rows, self.params, batch_size=self.batch_size)

    def apply(self, grads: Sequence[Query]) -> list[Query]:
        acc = [[torch.zeros_like(g) for g in q] for q in grads]
        for idx, batch in self._grads():
            for j, g in enumerate(batch):
                flat = g.flatten(1)  # [b, d_l]
                denom = (self.lambdas[j] + self.sq_norms[idx, j]).to(flat)
                for k, q in enumerate(grads):
                    coef = (flat @ q[j].flatten().to(flat)) / denom  # [b]
                    acc[k][j].add_((coef @ flat).view_as(q[j]))
        n = len(self.rows)
        return [
            [(g - a / n) / lam for g, a, lam in zip(q, ak, self.lambdas, strict=True)]
            for q, ak in zip(grads, acc, strict=True)
        ]


# ====================================================================== scoring
def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def jvp_scores(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    queries: Sequence[Query],
    ids: Tensor,
    labels: Tensor,
    *,
    autocast_dtype: torch.dtype | None = None,
    chunk_tokens: int = CHUNK_TOKENS,
    vmap_queries: bool = True,
    jvp_attention: bool = True,
    jvp_head: bool = True,
    jvp_body: bool = True,
) -> Tensor:
    """Scores [K, B] of the rows of one batch for K queries: ``d/de L(x; theta + e u_k)``, the JVP of
    the per-sample mean losses along each query (forward mode: one pass; ``vmap`` over the K tangents
    shares the primal computation unless ``vmap_queries`` is False).  No autograd graph is built.

    ``autocast_dtype`` (e.g. bf16) autocasts the forward and tangent passes (the loss is float32).
    ``jvp_attention``: the model's causal attention takes :func:`.jvp_attention.jvp_sdpa`'s exact
    flash-style tangent (Triton on CUDA); False leaves it to math SDPA's forward-mode rule, which forms
    [B, H, T, T] scores (the old path, kept for A/B checks).  SDPA calls ``jvp_sdpa`` passes through
    (masked ones) take the math kernel either way: no other SDPA backend has a forward-mode rule.
    ``jvp_head``: the LM head and loss take :mod:`.jvp_linear_ce`'s rule, which never forms the
    tangent logits; False leaves them to PyTorch's rules (the old path, kept for A/B checks).
    ``jvp_body``: the model's norms, RoPE and SwiGLU take :mod:`.jvp_rules`' fused rules (compiled on
    CUDA); False leaves them to PyTorch's per-op rules (kept for A/B checks)."""
    frozen = _frozen(model)
    primals = {n: frozen[n] for n in params}

    def losses(sub: dict[str, Tensor]) -> Tensor:
        sums, counts = _loss_sums(model, {**frozen, **sub}, ids, labels, chunk_tokens, jvp_head)
        return sums / counts.clamp(min=1)

    def tangent_out(tangent: dict[str, Tensor]) -> Tensor:
        return jvp(losses, (primals,), (tangent,))[1]

    tangents = [{n: u.to(primals[n]) for n, u in zip(params, q, strict=True)} for q in queries]
    attention = jvp_sdpa() if jvp_attention else contextlib.nullcontext()
    body = jvp_rules() if jvp_body else contextlib.nullcontext()
    with (
        torch.no_grad(),
        attention,
        body,
        sdpa_kernel(SDPBackend.MATH),
        _autocast(ids.device, autocast_dtype),
    ):
        if vmap_queries and len(tangents) > 1:
            stacked = {n: torch.stack([t[n] for t in tangents]) for n in params}
            out = vmap(tangent_out)(stacked)
        else:
            out = torch.stack([tangent_out(t) for t in tangents])
    return out


def influence_scores(
    model: nn.Module,
    rows: Rows,
    params: Mapping[str, nn.Parameter],
    queries: Query | Sequence[Query],
    *,
    batch_size: int = 16,
    autocast_dtype: torch.dtype | None = None,
    chunk_tokens: int = CHUNK_TOKENS,
    vmap_queries: bool = True,
    jvp_head: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Scores u^T grad L(x) of token-id ``rows`` (positive: training on x lowers the probe loss).

    ``queries``: one query (-> scores [N]) or a sequence of K queries (-> [K, N]).  Rows are batched by
    length (right padded); results come back in input order, float64 on the CPU; ``progress(k)`` is
    called after each batch of ``k`` rows.  See :func:`jvp_scores` for the other arguments."""
    single = bool(queries) and isinstance(queries[0], Tensor)
    qs: list[Query] = [list(queries)] if single else [list(q) for q in queries]  # type: ignore[arg-type]
    out = torch.zeros(len(qs), len(rows), dtype=torch.float64)
    for idx, batch in _batches(rows, batch_size):
        ids, labels = pad_batch(batch, device=module_device(model))
        s = jvp_scores(
            model,
            params,
            qs,
            ids,
            labels,
            autocast_dtype=autocast_dtype,
            chunk_tokens=chunk_tokens,
            vmap_queries=vmap_queries,
            jvp_head=jvp_head,
        )
        out[:, idx] = s.double().cpu()
        if progress is not None:
            progress(len(idx))
    return out[0] if single else out


def score_per_sample_grad(
    model: nn.Module, rows: Rows, params: Mapping[str, nn.Parameter], query: Query, *, batch_size: int = 8
) -> Tensor:
    """Verification path: ``u^T grad L(x)`` from explicit per-sample gradients (``vmap(grad)``) [N]."""
    out = torch.zeros(len(rows), dtype=torch.float64)
    for idx, grads in per_sample_gradients(model, rows, params, batch_size=batch_size):
        dots = sum((g.flatten(1) * u.flatten().to(g)).sum(dim=1) for g, u in zip(grads, query, strict=True))
        out[idx] = dots.double().cpu()
    return out


@torch.no_grad()
def score_finite_difference(
    model: nn.Module,
    rows: Rows,
    params: Mapping[str, nn.Parameter],
    query: Query,
    *,
    eps: float | None = None,
    batch_size: int = 16,
) -> Tensor:
    """Verification path: central difference ``(L(theta + e u) - L(theta - e u)) / 2e`` [N].  ``eps``
    defaults to ``1e-4 / ||u||`` (a step of length 1e-4; use float64 models)."""
    norm = torch.sqrt(sum(u.double().pow(2).sum() for u in query))
    e = float(eps if eps is not None else 1e-4 / max(float(norm), 1e-30))
    plus = {n: p.detach() + e * u for (n, p), u in zip(params.items(), query, strict=True)}
    minus = {n: p.detach() - e * u for (n, p), u in zip(params.items(), query, strict=True)}
    out = torch.zeros(len(rows), dtype=torch.float64)
    with sdpa_kernel(SDPBackend.MATH):
        for idx, batch in _batches(rows, batch_size):
            ids, labels = pad_batch(batch, device=module_device(model))
            hi = per_sample_loss(model, ids, labels, plus).double()
            lo = per_sample_loss(model, ids, labels, minus).double()
            out[idx] = ((hi - lo) / (2 * e)).cpu()
    return out


# ====================================================================== Eq. 3-4: joint influence
def joint_weights(
    keys: Sequence[tuple[str, str]], steps: Mapping[str, int] | Mapping[tuple[str, str], int]
) -> dict[tuple[str, str], float]:
    """alpha_{c,t} of Eq. 4 for the (capability, checkpoint) keys: uniform over capabilities,
    ``step_t / sum_t' step_t'`` over the checkpoints of each capability.  ``steps`` is keyed by checkpoint
    t, or by (c, t) when the capabilities have their own checkpoints."""
    caps = list(dict.fromkeys(c for c, _ in keys))

    def step(c: str, t: str) -> float:
        value = steps[(c, t)] if (c, t) in steps else steps[t]  # type: ignore[index]
        if value < 0:
            raise ValueError(f"checkpoint {t!r}: negative step {value}")
        return float(value)

    weights = {}
    for c in caps:
        ts = [t for cc, t in keys if cc == c]
        total = sum(step(c, t) for t in ts)
        if total <= 0:
            raise ValueError(f"capability {c!r}: checkpoint steps sum to 0")
        for t in ts:
            weights[(c, t)] = step(c, t) / total / len(caps)
    return weights


def joint_influence(
    scores: Mapping[tuple[str, str], Tensor], steps: Mapping[str, int] | Mapping[tuple[str, str], int]
) -> Tensor:
    """Eq. 3: ``I(x) = sum_c sum_t alpha_{c,t} score_{c,t}(x)`` with alpha of Eq. 4 (:func:`joint_weights`);
    ``scores`` maps (capability, checkpoint) -> scores [N]."""
    if not scores:
        raise ValueError("no scores to combine")
    weights = joint_weights(list(scores), steps)
    return sum(weights[k] * v.double() for k, v in scores.items())
