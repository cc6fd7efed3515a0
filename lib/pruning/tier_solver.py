"""Loss-aware tier choice under a byte budget (pure tensor functions, `--tier_assignment budgeted`).

Each block has, for every tier t (codes DENSE = 0, NM = 1, TOPK = 2), a loss L[b, t] (what that tier's keep
rule drops, lib.pruning.budget) and a stored cost c[b, t] in bytes (lib.tiered.cost). `solve_tiers` picks one
tier per block so that the total loss is smallest while the total cost stays within the budget, independently
in each of G groups (a matrix, a row of blocks, a layer: the scope). Shapes: G groups of B blocks, 3 tiers.

Method (a multiple-choice knapsack):
1. Lagrangian relaxation: for a multiplier lam >= 0 every block takes argmin_t L[b, t] + lam * c[b, t] (ties:
   the cheaper tier). The total cost falls as lam grows; a bisection finds the smallest lam whose choice fits.
   That choice is optimal for its own cost (exact on the lower convex hull of the cost-loss trade-off).
2. Greedy exchange: the bytes left between that cost and the budget buy upgrades (a block to a costlier tier
   with a smaller loss), alone or paid partly by downgrading another block; the move that lowers the loss most
   and still fits is taken, until none does. The budget is never exceeded, and what is left is less than the
   cost of any upgrade that would lower the loss (at most one tile's bytes).
Every block of a group has the same tier costs (one dtype, block size and k), so moves are typed by tiers.
"""

from __future__ import annotations

import torch

from lib.tiered.tier_map import DENSE, NM, TOPK


def lagrangian_choice(loss: torch.Tensor, cost: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """argmin_t loss + lam * cost per block, ties to the cheaper tier (then the lower code).

    loss, cost: float64 [G, B, 3]; lam: float64 [G]. Returns long [G, B].
    """
    score = loss + lam[:, None, None] * cost
    tied = score == score.min(-1, keepdim=True).values
    return torch.where(tied, cost, torch.inf).argmin(-1)


def chosen(values: torch.Tensor, tiers: torch.Tensor) -> torch.Tensor:
    """values [G, B, 3] at the chosen tiers [G, B] -> [G, B]."""
    return values.gather(-1, tiers.unsqueeze(-1)).squeeze(-1)


def _multiplier_bound(loss: torch.Tensor, cost: torch.Tensor) -> float:
    """A lam at which every block strictly prefers its cheapest tier: loss range / smallest cost gap, doubled."""
    gaps = (cost.unsqueeze(-1) - cost.unsqueeze(-2)).abs()
    gap = gaps[gaps > 0].min().item() if (gaps > 0).any() else 1.0
    return 2.0 * (loss.max() - loss.min()).item() / gap + 1.0


def lagrangian_tiers(loss: torch.Tensor, cost: torch.Tensor, budget: torch.Tensor, iterations: int = 48) -> torch.Tensor:
    """Step 1: the choice at the smallest multiplier (found by bisection) whose total cost fits each group's budget.

    loss, cost: float64 [G, B, 3]; budget: float64 [G]. Returns long [G, B]. Raises ValueError when even the
    cheapest tiers exceed a group's budget.
    """
    cheapest = cost.min(-1).values.sum(-1)
    if (cheapest > budget).any():
        g = int((cheapest - budget).argmax())
        raise ValueError(f"the byte budget {budget[g].item():.0f} is below the {cheapest[g].item():.0f} bytes of the "
                         "cheapest tiers; raise --tier_budget")
    lo = torch.zeros_like(budget)
    hi = torch.full_like(budget, _multiplier_bound(loss, cost))
    fits_at_zero = chosen(cost, lagrangian_choice(loss, cost, lo)).sum(-1) <= budget
    hi = torch.where(fits_at_zero, lo, hi)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        fits = chosen(cost, lagrangian_choice(loss, cost, mid)).sum(-1) <= budget
        hi, lo = torch.where(fits, mid, hi), torch.where(fits, lo, mid)
    return lagrangian_choice(loss, cost, hi)


UPGRADES = ((TOPK, NM), (TOPK, DENSE), (NM, DENSE))  # (from, to) tier moves that cost bytes
DOWNGRADES = ((None, None), (DENSE, NM), (DENSE, TOPK), (NM, TOPK))  # ... and that free them (None: no move)


def _best_two(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two largest values of each row and their indices (-inf / -1 when the row is shorter): [G, B] -> [G, 2] x 2."""
    top = values.topk(min(2, values.shape[1]), dim=1)
    pad = 2 - top.values.shape[1]
    return (torch.nn.functional.pad(top.values, (0, pad), value=-torch.inf),
            torch.nn.functional.pad(top.indices, (0, pad), value=-1))


def exchange(loss: torch.Tensor, cost: torch.Tensor, budget: torch.Tensor, tiers: torch.Tensor, max_steps: int = 256
             ) -> torch.Tensor:
    """Step 2: while it lowers the loss and fits the budget, apply the best move of each group: one upgrade alone,
    or one upgrade paid partly by one downgrade of another block. All groups at once.

    loss: float64 [G, B, 3]; cost: float64 [G, 3] (the tier costs of every block of a group); budget: [G];
    tiers: long [G, B] (within budget). Returns long [G, B].
    """
    tiers = tiers.clone()
    rows = torch.arange(tiers.shape[0])
    for _ in range(max_steps):
        slack = budget - cost.gather(1, tiers).sum(1)
        current = chosen(loss, tiers)
        best_gain = torch.zeros_like(budget)
        best_move = torch.full((tiers.shape[0], 4), -1, dtype=torch.long)  # (block up, tier, block down, tier)
        for up_from, up_to in UPGRADES:
            up_gain, up_at = _best_two(torch.where(tiers == up_from, current - loss[..., up_to], -torch.inf))
            for down_from, down_to in DOWNGRADES:
                extra = cost[:, up_to] - cost[:, up_from]
                if down_from is None:
                    gain, down_at = up_gain[:, 0], torch.full_like(up_at[:, 0], -1)
                    up_pick = up_at[:, 0]
                else:
                    extra = extra - (cost[:, down_from] - cost[:, down_to])
                    down_gain, down_idx = _best_two(torch.where(tiers == down_from, current - loss[..., down_to], -torch.inf))
                    pairs = [(i, j) for i in range(2) for j in range(2)]
                    gains = torch.stack([torch.where(up_at[:, i] == down_idx[:, j], -torch.inf, up_gain[:, i] + down_gain[:, j])
                                         for i, j in pairs], 1)
                    gain, pick = gains.max(1)
                    up_pick = up_at.gather(1, torch.tensor([i for i, _ in pairs])[pick].unsqueeze(1)).squeeze(1)
                    down_at = down_idx.gather(1, torch.tensor([j for _, j in pairs])[pick].unsqueeze(1)).squeeze(1)
                better = (extra <= slack) & (gain > best_gain * (1 + 1e-12) + 1e-300)
                best_gain = torch.where(better, gain, best_gain)
                move = torch.stack([up_pick, torch.full_like(up_pick, up_to), down_at,
                                    torch.full_like(up_pick, -1 if down_to is None else down_to)], 1)
                best_move = torch.where(better.unsqueeze(1), move, best_move)
        moving = (best_gain > 0).nonzero().flatten()
        if not moving.numel():
            break
        tiers[moving, best_move[moving, 0]] = best_move[moving, 1]
        down = moving[best_move[moving, 2] >= 0]
        tiers[down, best_move[down, 2]] = best_move[down, 3]
    return tiers


def solve_tiers(loss: torch.Tensor, cost: torch.Tensor, budget: torch.Tensor, prior: torch.Tensor | None = None,
                tie: float = 1e-9) -> torch.Tensor:
    """Tier codes minimizing each group's total loss with its total cost <= its budget (see the module docstring).

    loss: [G, B, 3] (>= 0; dense 0); cost: [3] or [G, 3] bytes of one block per tier; budget: [G] bytes.
    prior: tier codes [G, B] that win ties: every other tier's loss is raised by `tie` times the mean positive loss,
    so among (nearly) equal-loss choices the one closest to the prior is taken. With losses that carry no
    information (constant, on the cost line) and the prior's bytes as the budget, the result is the prior itself.
    Returns uint8 [G, B].
    """
    loss = loss.double().cpu()
    if prior is not None and (loss > 0).any():
        scale = tie * loss[loss > 0].mean()
        loss = loss + scale * (torch.arange(3) != prior.long().cpu().unsqueeze(-1))
    budget = budget.double().cpu().reshape(-1)
    cost = cost.double().cpu().expand(loss.shape[0], 3)
    tiers = lagrangian_tiers(loss, cost.unsqueeze(1).expand_as(loss), budget)
    return exchange(loss, cost, budget, tiers).to(torch.uint8)
