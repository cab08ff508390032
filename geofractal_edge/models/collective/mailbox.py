"""The mailbox: streams read each other's messages, as an explicit tensor step inside the forward.

The v1 prototype posted each router's "routing state" to a Python registry after its forward;
that cannot be exported and lags one step. Here every stream writes a message from its opinion
and its routing state (the mean weight of each of its K routes) in the same forward, then each
stream reads all messages by attention and adds what it read to its opinion:

    m_t   = tanh(W_m [opinion_t, state_t])                       [T, B, M]
    key_t = m_t + address_t        query_t = W_q opinion_t + address'_t
    read_t = sum_u softmax_u(query_t . key_u / sqrt(M)) W_v m_u
    opinion_t <- opinion_t + W_o read_t

`address_t` and `address'_t` are projections of stream t's router fingerprint: without
fingerprints the messages are anonymous. One mailbox serves all streams (shared weights).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from geofractal_edge.models.collective.config import CollectiveConfig


class Mailbox(nn.Module):
    def __init__(self, config: CollectiveConfig) -> None:
        super().__init__()
        d, m, k, f = config.feature_dim, config.message_dim, config.routes, config.fingerprint_dim
        self.write = nn.Linear(d + k, m)
        self.query, self.value = nn.Linear(d, m), nn.Linear(m, m)
        self.out = nn.Linear(m, d)
        nn.init.zeros_(self.out.weight)  # starts as the identity on opinions
        nn.init.zeros_(self.out.bias)
        self.addresses = nn.Linear(f, 2 * m, bias=False) if config.fingerprints else None

    def address(self, fingerprints: Tensor | None) -> Tensor | None:
        """[T, F] -> [T, 2M] (key and query addresses), or None without fingerprints. Parameters
        only: the export lowering folds it into a constant."""
        return None if fingerprints is None or self.addresses is None else self.addresses(fingerprints)

    def forward(self, opinions: Tensor, states: Tensor, address: Tensor | None) -> Tensor:
        """opinions [T, B, D], states [T, B, K], address [T, 2M] or None -> opinions [T, B, D]."""
        messages = torch.tanh(self.write(torch.cat([opinions, states], dim=-1)))  # [T, B, M]
        keys, queries = messages, self.query(opinions)
        if address is not None:
            m = messages.shape[-1]
            keys = keys + address[:, None, :m]
            queries = queries + address[:, None, m:]
        scores = torch.einsum("tbm,ubm->btu", queries, keys) / math.sqrt(keys.shape[-1])  # [B, T, T]
        read = torch.einsum("btu,ubm->tbm", torch.softmax(scores, dim=-1), self.value(messages))  # [T, B, M]
        return opinions + self.out(read)
